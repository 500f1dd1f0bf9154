"""The chapter's MLP and the LeNet family, built from config dataclasses.

Models read the input shape and the class count from the data, so the same config works on
1x28x28 digits, 3x32x32 CIFAR images and, in 1-D, on a time series of shape (channels,
length): the layer tables pick Conv1d or Conv2d (and the matching pools and norms) by the
number of spatial axes. Every knob is checked while the model is built, against the real
feature-map sizes, so a combination that cannot work fails before training with the knob,
its value and the input size in the message.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from cnnlab.config import ConfigError, LeNetConfig, MLPConfig
from cnnlab.layers import (
    ACTIVATIONS,
    NORMS,
    POOLS,
    conv_block,
    conv_out,
    lookup,
    resolve_padding,
    same_padding,
)


def scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        act = lookup(ACTIVATIONS, cfg.activation, "model.activation")
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = math.prod(input_shape)  # any shape: (C, H, W), (C, length), ...
        for h in cfg.hidden:
            layers += [nn.Linear(n_in, scaled(h, cfg.width)), act(cfg.negative_slope)]
            n_in = scaled(h, cfg.width)
        layers.append(nn.Linear(n_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Residual(nn.Module):
    """act(body(x) + shortcut(x)), ResNet v1 style.

    The shortcut is the identity, or a 1x1 conv where channels or stride change. With
    "valid" padding the body also shrinks the map, so the shortcut is centre-cropped to
    match (as U-Net does with its skips) rather than forbidding that combination.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module, activation: nn.Module):
        super().__init__()
        self.body, self.shortcut, self.act = body, shortcut, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, s = self.body(x), self.shortcut(x)
        if s.shape[2:] != y.shape[2:]:  # centre-crop every spatial axis to the body's size
            crop = (
                slice((a - b) // 2, (a - b) // 2 + b)
                for a, b in zip(s.shape[2:], y.shape[2:], strict=True)
            )
            s = s[(..., *crop)]
        return self.act(y + s)


class LeNet(nn.Module):
    """Stages of `depth` conv blocks, each stage followed by a 2x2 pool, then dense layers.

    With the defaults this is the chapter's LeNet-5 (44,426 parameters on 1x28x28). The
    first conv of a stage uses `stride` and `padding`; the extra ones (depth > 1) keep the
    spatial size, so depth adds layers without changing what the dense head sees. On input
    of shape (channels, length) the same stages are 1-D: Conv1d, MaxPool1d, BatchNorm1d.
    """

    def __init__(self, cfg: LeNetConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape_text = "x".join(map(str, input_shape))
        dims = len(input_shape) - 1  # spatial axes: 1 for a time series, 2 for an image
        if dims not in (1, 2):
            raise ConfigError(
                f"input {shape_text} has {dims} spatial axes: the LeNet family takes "
                f"(channels, length) or (channels, height, width)"
            )
        if dims == 1 and isinstance(cfg.kernel_size, tuple):
            raise ConfigError(
                f"model.kernel_size={list(cfg.kernel_size)} has two axes but the input "
                f"{shape_text} has one: use an int"
            )
        if dims == 1 and cfg.factorize:
            raise ConfigError(
                f"model.factorize=true splits a k x k kernel into k x 1 and 1 x k, which needs "
                f"2-D input; input {shape_text} is 1-D: use model.factorize=false"
            )
        act = lookup(ACTIVATIONS, cfg.activation, "model.activation")
        norm = lookup(NORMS, cfg.norm, "model.norm")
        pool = lookup(POOLS, cfg.pool, "model.pool")

        def activation():
            return act(cfg.negative_slope)

        def make_norm(c: int):
            if norm is None:
                return None
            if cfg.norm == "group" and c % cfg.groups:
                raise ConfigError(
                    f"model.groups={cfg.groups} does not divide {c} channels (model.norm=group, "
                    f"input {'x'.join(map(str, input_shape))}): pick groups that divide "
                    f"every channel count"
                )
            return norm(c, cfg.groups, dims)

        def text(size: tuple[int, ...]) -> str:
            return "x".join(map(str, size))

        block_norm = make_norm if norm is not None else None
        knobs = (
            f"model.kernel_size={cfg.kernel_size}, model.stride={cfg.stride}, "
            f"model.padding={cfg.padding}, model.dilation={cfg.dilation}"
        )
        in_ch, size = input_shape[0], tuple(input_shape[1:])
        stages: list[nn.Module] = []
        for s, channels in enumerate(cfg.channels, start=1):
            out_ch = scaled(channels, cfg.width)
            blocks, stage_in, stage_size = [], in_ch, size
            for d in range(cfg.depth):
                first = d == 0
                stride = cfg.stride if first else 1
                padding = (
                    resolve_padding(cfg.padding, cfg.kernel_size, cfg.dilation, dims)
                    if first
                    else same_padding(cfg.kernel_size, cfg.dilation, dims)
                )
                if cfg.bottleneck is not None:
                    blocks.append(
                        conv_block(
                            in_ch,
                            cfg.bottleneck,
                            1,
                            norm=block_norm,
                            activation=activation,
                            dims=dims,
                        )
                    )
                    in_ch = cfg.bottleneck
                last = d == cfg.depth - 1
                blocks.append(
                    conv_block(
                        in_ch,
                        out_ch,
                        cfg.kernel_size,
                        stride,
                        padding,
                        cfg.dilation,
                        norm=block_norm,
                        # ResNet applies the last activation after the shortcut is added
                        activation=None if (cfg.residual and last) else activation,
                        factorize=cfg.factorize,
                        dims=dims,
                    )
                )
                new_size = conv_out(size, cfg.kernel_size, stride, padding, cfg.dilation)
                if min(new_size) < 1:
                    raise ConfigError(
                        f"{knobs} shrink the feature map below {text((1,) * dims)} in stage "
                        f"{s}, conv {d + 1} ({text(size)} -> {text(new_size)}) for input "
                        f"{shape_text}: use padding=same, a smaller kernel or fewer stages"
                    )
                in_ch, size = out_ch, new_size
            body = nn.Sequential(*blocks)
            if cfg.residual:
                short_size = conv_out(stage_size, 1, cfg.stride, 0, 1)
                if any(b > a for a, b in zip(short_size, size, strict=True)):
                    # the shortcut can be cropped to a smaller body output, not grown
                    raise ConfigError(
                        f"model.residual=true with {knobs} grows the map in stage {s} "
                        f"({text(stage_size)} -> {text(size)}, shortcut "
                        f"{text(short_size)}) for input {shape_text}: use "
                        f"padding=same or a smaller padding"
                    )
                needs_projection = stage_in != out_ch or cfg.stride != 1
                shortcut = (
                    conv_block(stage_in, out_ch, 1, cfg.stride, norm=block_norm, dims=dims)
                    if needs_projection
                    else nn.Identity()
                )
                body = Residual(body, shortcut, activation())
            stages.append(body)
            if pool is not None:
                if min(size) < 2:
                    raise ConfigError(
                        f"model.pool={cfg.pool} cannot halve a {text(size)} map after "
                        f"stage {s} for input {shape_text} ({knobs}): use model.pool=none, "
                        f"padding=same or fewer stages"
                    )
                stages.append(pool[dims](2, 2))
                size = conv_out(size, 2, 2, 0, 1)
        self.features = nn.Sequential(*stages)

        head: list[nn.Module] = [nn.Flatten()]
        n_in = in_ch * math.prod(size)
        for units in cfg.fc:
            head += [nn.Linear(n_in, scaled(units, cfg.width)), activation()]
            n_in = scaled(units, cfg.width)
        head.append(nn.Linear(n_in, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# The config schema decides the architecture; presets (lenet5_wide, resnet_small, ...)
# are only different values of the same schema.
MODELS: dict[type, type[nn.Module]] = {MLPConfig: MLP, LeNetConfig: LeNet}


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MODELS[type(cfg)](cfg, tuple(input_shape), num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_conv_layers(model: nn.Module) -> int:
    """Convs with more than one tap (k x k, k x 1, 1 x k, or k in 1-D): a factorized pair
    (k x 1 then 1 x k, layers.conv_block) counts once, 1x1 bottlenecks and projections not
    at all."""
    count, previous = 0, None
    for m in model.modules():
        if not isinstance(m, nn.modules.conv._ConvNd):
            continue
        k = m.kernel_size
        pair = previous is not None and len(k) == 2 and k[0] == 1 and previous[0] > 1 == previous[1]
        count += max(k) > 1 and not pair  # pair: the 1 x k half after a k x 1
        previous = k
    return count


def summary(model: nn.Module) -> str:
    """One line naming each layer in order, e.g. 'conv1-6k5x5 relu maxpool ... fc84-10'.

    Convs and dense layers show their sizes; every other layer is named by its class
    (MaxPool2d and MaxPool1d -> maxpool, LayerNorm -> layernorm), so a layer added to a
    table in layers.py is summarised without a change here."""
    parts = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            k = "x".join(map(str, m.kernel_size))
            extra = "".join(
                f" {n}{v[0] if len(set(v)) == 1 else 'x'.join(map(str, v))}"
                for n, v in (("s", m.stride), ("d", m.dilation))
                if set(v) != {1}
            )
            parts.append(f"conv{m.in_channels}-{m.out_channels}k{k}{extra}")
        elif isinstance(m, nn.Linear):
            parts.append(f"fc{m.in_features}-{m.out_features}")
        elif isinstance(m, Residual):
            parts.append("residual:")
        elif not any(m.children()) and not isinstance(m, nn.Flatten | nn.Identity):
            parts.append(re.sub(r"[123]d$", "", type(m).__name__).lower())
    return " ".join(parts)
