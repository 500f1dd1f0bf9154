"""Name -> layer tables and the one conv block every CNN in cnnlab is built from.

Names from the config are resolved here once, when a model is built; the model code
itself only ever sees nn.Module factories (the timm create_act / create_norm idea).
Layers that depend on the data's number of spatial axes (`dims`: 1 for a time series of
shape (channels, length), 2 for an image) are picked here by `dims`, so the model code is
the same for both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import Activation, Norm, Pool

# Each table is keyed by the config's enum, where the names are declared; a test checks
# that every member has its entry. The layer summary (models.summary) names layers by their
# class, so a new entry needs no other change.
ACTIVATIONS: dict[Activation, Callable[[float], nn.Module]] = {
    Activation.relu: lambda slope: nn.ReLU(),
    Activation.leaky_relu: lambda slope: nn.LeakyReLU(slope),
    Activation.gelu: lambda slope: nn.GELU(),
    Activation.sigmoid: lambda slope: nn.Sigmoid(),
    Activation.tanh: lambda slope: nn.Tanh(),
}

# The layer classes of each kind, by number of spatial axes.
CONVS = {1: nn.Conv1d, 2: nn.Conv2d}
POOLS: dict[Pool, dict[int, type[nn.Module]] | None] = {
    Pool.max: {1: nn.MaxPool1d, 2: nn.MaxPool2d},
    Pool.avg: {1: nn.AvgPool1d, 2: nn.AvgPool2d},
    Pool.none: None,
}
BATCH_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
INSTANCE_NORMS = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d}


class LayerNorm(nn.GroupNorm):
    """Layer Norm for feature maps: GroupNorm with one group normalises (C, *spatial) of each
    sample, which nn.LayerNorm could only do with the spatial size fixed in advance. Works
    for any number of spatial axes."""

    def __init__(self, channels: int):
        super().__init__(1, channels)


class LocalResponseNorm(nn.Module):
    """AlexNet's LRN (size 5, alpha 1e-4, beta 0.75, k 2): each value divided by
    (k + alpha/size * the sum of squares over its 5 neighbouring channels) ** beta, as
    nn.LocalResponseNorm computes it (the same numbers to 1e-6, tested). Written as five
    shifted sums and t ** -0.75 = rsqrt(t) * sqrt(rsqrt(t)) because torch's avg_pool3d and
    pow made a LeNet-5 step with LRN 3-5 times slower on a CPU than without (claim 9's
    sweep was the ledger's dearest); works for any number of spatial axes."""

    size, alpha, beta, k = 5, 1e-4, 0.75, 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, n = x.shape[1], self.size
        squares = F.pad(x * x, (0, 0) * (x.dim() - 2) + (n // 2, (n - 1) // 2))
        window = squares[:, :c]
        for i in range(1, n):
            window = window + squares[:, i : i + c]
        r = torch.rsqrt(self.k + (self.alpha / n) * window)
        return x * r * torch.sqrt(r)


# Each entry builds a norm for `c` channels (`groups` is read by group norm only) on data
# with `dims` spatial axes. Layer, group and LRN work on any. LRN uses AlexNet's settings.
NORMS: dict[Norm, Callable[..., nn.Module] | None] = {
    Norm.none: None,
    Norm.batch: lambda c, groups, dims=2: BATCH_NORMS[dims](c),
    Norm.layer: lambda c, groups, dims=2: LayerNorm(c),
    Norm.instance: lambda c, groups, dims=2: INSTANCE_NORMS[dims](c, affine=True),
    Norm.group: lambda c, groups, dims=2: nn.GroupNorm(groups, c),
    Norm.lrn: lambda c, groups, dims=2: LocalResponseNorm(),
}


def lookup(table: dict, name, key: str):
    """table[name], or a ValueError that names the config key and the allowed values."""
    if name not in table:
        raise ValueError(f"{key}={name!r} is not allowed: choose one of {', '.join(table)}")
    return table[name]


def ntuple(v, dims: int = 2) -> tuple[int, ...]:
    """An int repeated per spatial axis, or the per-axis values as given."""
    return (v,) * dims if isinstance(v, int) else tuple(v)


def pair(v) -> tuple[int, int]:
    return ntuple(v, 2)


def same_padding(kernel_size, dilation, dims: int = 2) -> tuple[int, ...]:
    """Padding that keeps the size at stride 1 (exact for odd kernels), per axis."""
    k, d = ntuple(kernel_size, dims), ntuple(dilation, dims)
    return tuple(d[i] * (k[i] - 1) // 2 for i in range(dims))


def resolve_padding(padding, kernel_size, dilation, dims: int = 2) -> tuple[int, ...]:
    if padding == "same":
        return same_padding(kernel_size, dilation, dims)
    if padding == "valid":
        return (0,) * dims
    return ntuple(padding, dims)


def conv_out(size: tuple[int, ...], kernel_size, stride, padding, dilation) -> tuple[int, ...]:
    """Output size per spatial axis of a convolution (or pooling) on a `size` input."""
    n = len(size)
    k, s, p, d = (ntuple(v, n) for v in (kernel_size, stride, padding, dilation))
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n))


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
    dims: int = 2,
    branches: dict | None = None,
) -> nn.Sequential:
    """conv -> norm -> activation, the torchvision Conv2dNormActivation recipe, on data with
    `dims` spatial axes (Conv1d or Conv2d).

    The conv bias is off when a norm with a learnable shift follows, since that shift
    replaces it (LRN has none, so its conv keeps the bias, as in AlexNet).
    With `factorize` (2-D only), the k x k conv becomes k x 1 then 1 x k (Inception v3):
    both map to `out_ch`, and the first has no bias because a linear map follows it directly.
    With `branches` (branch_convs' keywords), the conv is Inception's parallel branches.
    """
    k, s, p, d = (ntuple(v, dims) for v in (kernel_size, stride, padding, dilation))
    norm_layer = norm(out_ch) if norm is not None else None
    bias = getattr(norm_layer, "bias", None) is None
    if branches is not None:
        kw = dict(stride=s, dilation=d, bias=bias, dims=dims)
        layers = [branch_convs(in_ch, out_ch, **kw, **branches)]
    elif factorize and dims == 2 and min(k) > 1:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, s, p, d
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False),
            nn.Conv2d(out_ch, out_ch, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias),
        ]
    else:
        layers = [CONVS[dims](in_ch, out_ch, k, s, p, d, bias=bias)]
    if norm_layer is not None:
        layers.append(norm_layer)
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def branch_shares(channels: int, n: int) -> list[int]:
    """`channels` shared over `n` branches: each gets channels // n, the first channels % n
    one more (16 over 3 -> 6, 5, 5), so the concatenation keeps the stage's width."""
    return [channels // n + (i < channels % n) for i in range(n)]


class Branches(nn.ModuleList):
    """Inception's multi-scale stage: parallel branches over the same input, their maps
    concatenated along channels. Each branch is a Sequential of plain convs (and a pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self], dim=1)


def branch_convs(
    in_ch: int,
    out_ch: int,
    kernels: list[int],
    stride=1,
    dilation=1,
    bottleneck: int | None = None,
    pool: bool = False,
    activation: Callable[[], nn.Module] = nn.ReLU,
    bias: bool = True,
    dims: int = 2,
) -> Branches:
    """One branch per kernel size, each with "same" padding, `out_ch` shared out over them
    (and the pool branch, if any). With `bottleneck`, each branch with a kernel > 1 starts
    with a 1x1 conv to that many channels (Inception's reduction)."""
    conv = CONVS[dims]
    shares = branch_shares(out_ch, len(kernels) + pool)
    branches = []
    for k, share in zip(kernels, shares, strict=False):
        layers: list[nn.Module] = []
        c = in_ch
        if bottleneck is not None and k > 1:
            layers += [conv(in_ch, bottleneck, 1), activation()]
            c = bottleneck
        pad = same_padding(k, dilation, dims)
        layers.append(conv(c, share, k, stride, pad, dilation, bias=bias))
        branches.append(nn.Sequential(*layers))
    if pool:
        max_pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d}[dims](3, 1, 1)
        branches.append(nn.Sequential(max_pool, conv(in_ch, shares[-1], 1, stride, bias=bias)))
    return Branches(branches)
