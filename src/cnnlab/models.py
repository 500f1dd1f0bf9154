"""The chapter's MLP and the LeNet family, built from config dataclasses.

Models read the input shape and the class count from the data, so the same config works on
1x28x28 digits, 3x32x32 CIFAR images and, in 1-D, on a time series of shape (channels,
length): the layer tables pick Conv1d or Conv2d (and the matching pools and norms) by the
number of spatial axes. A model is built in two steps: `plan` works out every layer's
sizes from the config and the input shape (no torch, no memory), checking each knob
against the real feature-map sizes, so a combination that cannot work fails before
training with the knob, its value and the input size in the message; the model's
constructor then builds its layers from that plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.layers import (
    ACTIVATIONS,
    NORMS,
    POOLS,
    Branches,
    conv_block,
    conv_out,
    lookup,
    ntuple,
    resolve_padding,
    same_padding,
)
from cnnlab.outcome import ConfigError

POOL_LAYERS = tuple(layer for kinds in POOLS.values() if kinds for layer in kinds.values())


def scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


def text(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


# ---- the plan: every layer's sizes, from the config and the input shape ------------------


@dataclass(frozen=True)
class ConvPlan:
    """One conv of a stage: an optional 1x1 bottleneck to `bottleneck` channels, then the
    k x k conv from `in_ch` (before the bottleneck) to `out_ch`, on a `size_in` map."""

    in_ch: int
    out_ch: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    size_in: tuple[int, ...]
    size_out: tuple[int, ...]
    bottleneck: int | None = None
    activation: bool = True  # False: the last conv of a residual stage, activated after the add


@dataclass(frozen=True)
class StagePlan:
    """`depth` convs; with a residual, a shortcut (identity, or a 1x1 projection); then the
    pool, if any, to a map of `pooled_size`."""

    convs: tuple[ConvPlan, ...]
    residual: bool
    projection: bool
    pooled_size: tuple[int, ...] | None

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.pooled_size or self.convs[-1].size_out


@dataclass(frozen=True)
class Plan:
    """What a model will be on `input_shape` (channels, *spatial): its conv stages (none
    for an MLP), the size the head flattens, and its dense layers as (in, out)."""

    input_shape: tuple[int, ...]
    stages: tuple[StagePlan, ...]
    flat: int
    dense: tuple[tuple[int, int], ...]

    @property
    def dims(self) -> int:
        return len(self.input_shape) - 1


def dense_plan(n_in: int, hidden, width: float, num_classes: int) -> tuple[tuple[int, int], ...]:
    return tuple(pairwise([n_in, *(scaled(units, width) for units in hidden), num_classes]))


def plan_mlp(cfg: MLPConfig, input_shape: tuple[int, ...], num_classes: int) -> Plan:
    lookup(ACTIVATIONS, cfg.activation, "model.activation")
    flat = math.prod(input_shape)  # any shape: (C, H, W), (C, length), ...
    return Plan(input_shape, (), flat, dense_plan(flat, cfg.hidden, cfg.width, num_classes))


def check_lenet_input(cfg: LeNetConfig, input_shape: tuple[int, ...]) -> int:
    """The number of spatial axes, if the LeNet family and these knobs can take them."""
    shape_text = text(input_shape)
    dims = len(input_shape) - 1
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
    lookup(ACTIVATIONS, cfg.activation, "model.activation")
    lookup(NORMS, cfg.norm, "model.norm")
    lookup(POOLS, cfg.pool, "model.pool")
    return dims


def check_groups(cfg: LeNetConfig, channels: int, input_shape: tuple[int, ...]) -> None:
    if cfg.norm == "group" and channels % cfg.groups:
        raise ConfigError(
            f"model.groups={cfg.groups} does not divide {channels} channels (model.norm=group, "
            f"input {text(input_shape)}): pick groups that divide every channel count"
        )


def knobs(cfg: LeNetConfig) -> str:
    return (
        f"model.kernel_size={cfg.kernel_size}, model.stride={cfg.stride}, "
        f"model.padding={cfg.padding}, model.dilation={cfg.dilation}"
    )


def check_branches(cfg: LeNetConfig, s: int, channels: int) -> None:
    n = len(cfg.branches) + cfg.branch_pool
    if n > channels:
        raise ConfigError(
            f"model.branches={cfg.branches}{' with model.branch_pool=true' * cfg.branch_pool} "
            f"needs {n} channels in stage {s}, which has {channels}: use fewer branches or "
            f"more model.channels"
        )


def plan_conv(cfg, s: int, d: int, in_ch: int, size: tuple, input_shape: tuple) -> ConvPlan:
    """Conv `d` (from 0) of stage `s` (from 1): the first uses `stride` and `padding`, the
    extra ones (depth > 1) keep the size."""
    dims, first = len(size), d == 0
    out_ch = scaled(cfg.channels[s - 1], cfg.width)
    stride = cfg.stride if first else 1
    kernel = cfg.kernel_size
    padding = (
        resolve_padding(cfg.padding, cfg.kernel_size, cfg.dilation, dims)
        if first
        else same_padding(cfg.kernel_size, cfg.dilation, dims)
    )
    if cfg.branches:  # each branch is "same"-padded: the widest gives the stage's kernel
        kernel = max(cfg.branches)
        padding = same_padding(kernel, cfg.dilation, dims)
        check_branches(cfg, s, out_ch)
    if cfg.bottleneck is not None and not cfg.branches:  # in a branch no norm acts on it
        check_groups(cfg, cfg.bottleneck, input_shape)
    check_groups(cfg, out_ch, input_shape)
    new_size = conv_out(size, kernel, stride, padding, cfg.dilation)
    if min(new_size) < 1:
        raise ConfigError(
            f"{knobs(cfg)} shrink the feature map below {text((1,) * dims)} in stage "
            f"{s}, conv {d + 1} ({text(size)} -> {text(new_size)}) for input "
            f"{text(input_shape)}: use padding=same, a smaller kernel or fewer stages"
        )
    return ConvPlan(
        in_ch,
        out_ch,
        *(ntuple(v, dims) for v in (kernel, stride, padding, cfg.dilation)),
        size_in=size,
        size_out=new_size,
        bottleneck=cfg.bottleneck,
        activation=not (cfg.residual and d == cfg.depth - 1),
    )


def plan_stage(cfg: LeNetConfig, s: int, in_ch: int, size: tuple, input_shape: tuple):
    convs = []
    for d in range(cfg.depth):
        convs.append(plan_conv(cfg, s, d, in_ch, size, input_shape))
        in_ch, size = convs[-1].out_ch, convs[-1].size_out
    stage_in = convs[0].in_ch
    stage_size = convs[0].size_in
    if cfg.residual:
        short_size = conv_out(stage_size, 1, cfg.stride, 0, 1)
        if any(b > a for a, b in zip(short_size, size, strict=True)):
            # the shortcut can be cropped to a smaller body output, not grown
            raise ConfigError(
                f"model.residual=true with {knobs(cfg)} grows the map in stage {s} "
                f"({text(stage_size)} -> {text(size)}, shortcut "
                f"{text(short_size)}) for input {text(input_shape)}: use "
                f"padding=same or a smaller padding"
            )
    pooled = None
    if POOLS[cfg.pool] is not None:
        if min(size) < 2:
            raise ConfigError(
                f"model.pool={cfg.pool} cannot halve a {text(size)} map after "
                f"stage {s} for input {text(input_shape)} ({knobs(cfg)}): use model.pool=none, "
                f"padding=same or fewer stages"
            )
        pooled = conv_out(size, 2, 2, 0, 1)
    projection = cfg.residual and (stage_in != in_ch or cfg.stride != 1)
    return StagePlan(tuple(convs), cfg.residual, projection, pooled)


def plan_lenet(cfg: LeNetConfig, input_shape: tuple[int, ...], num_classes: int) -> Plan:
    check_lenet_input(cfg, input_shape)
    in_ch, size = input_shape[0], tuple(input_shape[1:])
    stages = []
    for s in range(1, len(cfg.channels) + 1):
        stages.append(plan_stage(cfg, s, in_ch, size, input_shape))
        in_ch, size = stages[-1].convs[-1].out_ch, stages[-1].out_size
    flat = in_ch * math.prod(size)
    return Plan(input_shape, tuple(stages), flat, dense_plan(flat, cfg.fc, cfg.width, num_classes))


PLANS = {MLPConfig: plan_mlp, LeNetConfig: plan_lenet}


def plan(cfg, input_shape: tuple[int, ...], num_classes: int) -> Plan:
    """The layer sizes of the model `cfg` describes on inputs of `input_shape` (channels,
    *spatial) with `num_classes` classes, or the ConfigError (ValueError for an unknown
    name) that building it would raise. Pure: it allocates nothing."""
    return PLANS[type(cfg)](cfg, tuple(input_shape), num_classes)


# ---- the models, built from their plans ----------------------------------------------------


def dense_head(
    layers: tuple[tuple[int, int], ...], activation, dropout: float = 0.0
) -> list[nn.Module]:
    """Linear layers with an activation between each pair (none after the last), each
    activation followed by dropout when `dropout` > 0."""
    head: list[nn.Module] = []
    for n_in, n_out in layers[:-1]:
        head += [nn.Linear(n_in, n_out), activation()] + [nn.Dropout(dropout)] * (dropout > 0)
    return [*head, nn.Linear(*layers[-1])]


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape = plan_mlp(cfg, tuple(input_shape), num_classes)
        act = ACTIVATIONS[cfg.activation]
        self.net = nn.Sequential(
            nn.Flatten(), *dense_head(shape.dense, lambda: act(cfg.negative_slope), cfg.dropout)
        )

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


@dataclass(frozen=True)
class StageBuilder:
    """The layers of LeNet's stages, from their plans: the config gives the activation,
    norm and factorisation, the plan every size."""

    cfg: LeNetConfig
    dims: int

    def activation(self) -> nn.Module:
        return ACTIVATIONS[self.cfg.activation](self.cfg.negative_slope)

    def norm(self, channels: int) -> nn.Module:
        return NORMS[self.cfg.norm](channels, self.cfg.groups, self.dims)

    def block(self, in_ch: int, out_ch: int, kernel=1, stride=1, padding=0, dilation=1, **kw):
        norm = self.norm if NORMS[self.cfg.norm] is not None else None
        return conv_block(
            in_ch, out_ch, kernel, stride, padding, dilation, norm=norm, dims=self.dims, **kw
        )

    def branches(self) -> dict | None:
        """branch_convs' keywords for a multi-scale stage (the bottleneck goes in each branch)."""
        if not self.cfg.branches:
            return None
        return dict(
            kernels=self.cfg.branches,
            bottleneck=self.cfg.bottleneck,
            pool=self.cfg.branch_pool,
            activation=self.activation,
        )

    def stage(self, stage: StagePlan) -> nn.Module:
        blocks: list[nn.Module] = []
        for conv in stage.convs:
            in_ch = conv.in_ch
            if conv.bottleneck is not None and not self.cfg.branches:
                blocks.append(self.block(in_ch, conv.bottleneck, activation=self.activation))
                in_ch = conv.bottleneck
            blocks.append(
                self.block(
                    in_ch,
                    conv.out_ch,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    # ResNet applies the last activation after the shortcut is added
                    activation=self.activation if conv.activation else None,
                    factorize=self.cfg.factorize,
                    branches=self.branches(),
                )
            )
        body = nn.Sequential(*blocks)
        if not stage.residual:
            return body
        first, last = stage.convs[0], stage.convs[-1]
        shortcut = (
            self.block(first.in_ch, last.out_ch, 1, first.stride)
            if stage.projection
            else nn.Identity()
        )
        return Residual(body, shortcut, self.activation())


class LeNet(nn.Module):
    """Stages of `depth` conv blocks, each stage followed by a 2x2 pool, then dense layers.

    With the defaults this is the chapter's LeNet-5 (44,426 parameters on 1x28x28). The
    first conv of a stage uses `stride` and `padding`; the extra ones (depth > 1) keep the
    spatial size, so depth adds layers without changing what the dense head sees. On input
    of shape (channels, length) the same stages are 1-D: Conv1d, MaxPool1d, BatchNorm1d.
    """

    def __init__(self, cfg: LeNetConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape = plan_lenet(cfg, tuple(input_shape), num_classes)
        build = StageBuilder(cfg, shape.dims)
        stages: list[nn.Module] = []
        for stage in shape.stages:
            stages.append(build.stage(stage))
            if stage.pooled_size is not None:
                stages.append(POOLS[cfg.pool][shape.dims](2, 2))
        self.features = nn.Sequential(*stages)
        head = dense_head(shape.dense, build.activation, cfg.dropout)
        self.classifier = nn.Sequential(nn.Flatten(), *head)

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
    count = 0
    previous = None
    for m in model.modules():
        if not isinstance(m, nn.modules.conv._ConvNd):
            continue
        k = m.kernel_size
        pair = previous is not None and len(k) == 2 and k[0] == 1 and previous[0] > 1 == previous[1]
        count += max(k) > 1 and not pair  # pair: the 1 x k half after a k x 1
        previous = k
    return count


def branches_text(branches: Branches) -> str:
    """'incept16[1,3,5]': the stage's output channels and its branches' kernels ('pool')."""
    kernels = [
        "pool" if any(isinstance(c, POOL_LAYERS) for c in b) else str(b[-1].kernel_size[0])
        for b in branches
    ]
    return f"incept{sum(b[-1].out_channels for b in branches)}[{','.join(kernels)}]"


def summary(model: nn.Module) -> str:
    """One line naming each layer in order, e.g. 'conv1-6k5x5 relu maxpool ... fc84-10'.

    Convs and dense layers show their sizes; every other layer is named by its class
    (MaxPool2d and MaxPool1d -> maxpool, LayerNorm -> layernorm), so a layer added to a
    table in layers.py is summarised without a change here."""
    parts = []
    inside = {id(c) for b in model.modules() if isinstance(b, Branches) for c in b.modules()}
    for m in model.modules():
        if isinstance(m, Branches):
            parts.append(branches_text(m))
        elif id(m) in inside:
            continue
        elif isinstance(m, nn.modules.conv._ConvNd):
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
