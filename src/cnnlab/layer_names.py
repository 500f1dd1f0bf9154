"""The names a reader knows a model's conv layers by, for the pictures' titles: 'conv 1
(5x5)', 'conv 2 (5x5, stride 2)', 'conv 1 (5x5 factorised as 5x1 then 1x5)', 'conv 1 (1x1,
3x3, 5x5 in parallel)', 'convs 1-2 (3x3) + shortcut'. Derived from the modules themselves,
so any model built from layers.py's blocks (or a plain Sequential of convs) is named.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from cnnlab.inspection import CONVS, POOLS, window_text
from cnnlab.layers import Branches
from cnnlab.models import Residual


class ConvLayer(NamedTuple):
    """One conv layer as a reader counts them: a conv with more than one tap, a factorised
    k x 1 then 1 x k pair, or a multi-scale stage's parallel branches. `text` says its
    window: '5x5', '5, stride 2', '5x5 factorised as 5x1 then 1x5', '1x1, 3x3, 5x5 in
    parallel'. `convs`: the conv, the pair, or the last conv of each branch (whose maps the
    branches output), named in `parts` ('5x5'; '5x1', '1x5'; '1x1', '3x3', 'pool')."""

    number: int
    convs: tuple[nn.Module, ...]
    text: str
    kind: str  # conv, factorised or branches
    parts: tuple[str, ...]


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """The model's conv layers, numbered from 1 in the order they run. A 1x1 conv only
    mixes channels and gets no number (as in count_conv_layers, which differs only in
    counting each branch of a multi-scale stage)."""
    layers: list[ConvLayer] = []
    in_branches: set[nn.Module] = set()
    for m in model.modules():
        if isinstance(m, Branches):
            in_branches.update(c for c in m.modules() if isinstance(c, CONVS))
            parts = tuple(map(branch_kernel, m))
            text = f"{', '.join(parts)} in parallel"
            convs = tuple(branch[-1] for branch in m)
            layers.append(ConvLayer(len(layers) + 1, convs, text, "branches", parts))
        elif not isinstance(m, CONVS) or m in in_branches:
            continue
        elif layers and is_factorised_pair(layers[-1].convs, m):
            first = layers[-1].convs[0]
            text = factorised_text(first, m)
            parts = (*layers[-1].parts, kernel_text(m))
            layers[-1] = ConvLayer(len(layers), (first, m), text, "factorised", parts)
        elif max(m.kernel_size) > 1:
            n = len(m.kernel_size)
            text = window_text(m.kernel_size, m.stride, m.dilation, n, words=True)
            layers.append(ConvLayer(len(layers) + 1, (m,), text, "conv", (kernel_text(m),)))
    return layers


def kernel_text(conv: nn.Module) -> str:
    return "x".join(map(str, conv.kernel_size))


def is_factorised_pair(convs: tuple[nn.Module, ...], conv: nn.Module) -> bool:
    """`conv` is 1 x k and `convs` a lone k x 1 conv: the two halves of a factorised k x k
    (layers.conv_block puts them one after the other)."""
    k = conv.kernel_size
    return len(convs) == 1 and len(k) == 2 and k[0] == 1 and convs[0].kernel_size[1] == 1


def factorised_text(first: nn.Module, second: nn.Module) -> str:
    (kh, _), (_, kw) = first.kernel_size, second.kernel_size
    window = window_text(
        (kh, kw),
        (first.stride[0], second.stride[1]),
        (first.dilation[0], second.dilation[1]),
        2,
        words=True,
    )
    return f"{window} factorised as {kh}x1 then 1x{kw}"


def branch_kernel(branch: nn.Module) -> str:
    """'3x3' (its last conv's kernel), or 'pool' for a pool branch (a pool, then a 1x1)."""
    if any(isinstance(m, POOLS) for m in branch.modules()):
        return "pool"
    return kernel_text(branch[-1])


def stage_title(stage: nn.Module, layers: list[ConvLayer]) -> str:
    """'conv 1 (5x5)', 'convs 3-4 (3x3) + shortcut', '1x1 conv': the conv layers whose
    output `stage` (one of inspection.conv_stages) is."""
    inside = set(stage.modules())
    mine = [layer for layer in layers if layer.convs[0] in inside]
    texts = sorted({layer.text for layer in mine})
    if not mine:
        title = "1x1 conv"
    elif len(mine) == 1:
        title = f"conv {mine[0].number} ({texts[0]})"
    else:
        title = f"convs {mine[0].number}-{mine[-1].number}"
        title += f" ({texts[0]})" if len(texts) == 1 else ""
    return title + " + shortcut" * isinstance(stage, Residual)
