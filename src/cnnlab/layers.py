"""Name -> layer tables and the one conv block every CNN in cnnlab is built from.

Names from the config are resolved here once, when a model is built; the model code
itself only ever sees nn.Module factories (the timm create_act / create_norm idea).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnlab.config import Activation, Norm, Pool

# Each table is keyed by the config's enum, where the names are declared; a test checks
# that every member has its entry. The layer summary (models.summary) names layers by their
# class, so a new entry needs no other change.
ACTIVATIONS: dict[Activation, Callable[[float], nn.Module]] = {
    Activation.relu: lambda slope: nn.ReLU(),
    Activation.leaky_relu: lambda slope: nn.LeakyReLU(slope),
    Activation.gelu: lambda slope: nn.GELU(),
}

POOLS: dict[Pool, type[nn.Module] | None] = {
    Pool.max: nn.MaxPool2d,
    Pool.avg: nn.AvgPool2d,
    Pool.none: None,
}


class LayerNorm2d(nn.GroupNorm):
    """Layer Norm for feature maps: GroupNorm with one group normalises (C, H, W) of each
    sample, which nn.LayerNorm could only do with the spatial size fixed in advance."""

    def __init__(self, channels: int):
        super().__init__(1, channels)


# Each entry builds a norm for `c` channels (`groups` is read by group norm only). LRN uses
# AlexNet's settings.
NORMS: dict[Norm, Callable[[int, int], nn.Module] | None] = {
    Norm.none: None,
    Norm.batch: lambda c, groups: nn.BatchNorm2d(c),
    Norm.layer: lambda c, groups: LayerNorm2d(c),
    Norm.instance: lambda c, groups: nn.InstanceNorm2d(c, affine=True),
    Norm.group: lambda c, groups: nn.GroupNorm(groups, c),
    Norm.lrn: lambda c, groups: nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
}


def lookup(table: dict, name, key: str):
    """table[name], or a ValueError that names the config key and the allowed values."""
    if name not in table:
        raise ValueError(f"{key}={name!r} is not allowed: choose one of {', '.join(table)}")
    return table[name]


def pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def same_padding(kernel_size, dilation) -> tuple[int, int]:
    """Padding that keeps the size at stride 1 (exact for odd kernels), per axis."""
    kh, kw = pair(kernel_size)
    dh, dw = pair(dilation)
    return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)


def resolve_padding(padding, kernel_size, dilation) -> tuple[int, int]:
    if padding == "same":
        return same_padding(kernel_size, dilation)
    if padding == "valid":
        return (0, 0)
    return pair(padding)


def conv_out(size: tuple[int, int], kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """Output height and width of a convolution (or pooling) on a `size` input."""
    k, s, p, d = pair(kernel_size), pair(stride), pair(padding), pair(dilation)
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2))


def conv_block(
    in_ch: int,
    out_ch: int,
    kernel_size=3,
    stride=1,
    padding=0,
    dilation=1,
    norm: Callable[[int], nn.Module] | None = None,
    activation: Callable[[], nn.Module] | None = None,
    factorize: bool = False,
) -> nn.Sequential:
    """conv -> norm -> activation, the torchvision Conv2dNormActivation recipe.

    The conv bias is off when a norm with a learnable shift follows, since that shift
    replaces it (LRN has none, so its conv keeps the bias, as in AlexNet).
    With `factorize`, the k x k conv becomes k x 1 then 1 x k (Inception v3): both map to
    `out_ch`, and the first has no bias because a linear map follows it directly.
    """
    kh, kw = pair(kernel_size)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    norm_layer = norm(out_ch) if norm is not None else None
    bias = getattr(norm_layer, "bias", None) is None
    if factorize and kh > 1 and kw > 1:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False),
            nn.Conv2d(out_ch, out_ch, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias),
        ]
    else:
        layers = [nn.Conv2d(in_ch, out_ch, (kh, kw), (sh, sw), (ph, pw), (dh, dw), bias=bias)]
    if norm_layer is not None:
        layers.append(norm_layer)
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)
