"""The pictures of what a run's model does: filters.png (its first layer's weights),
feature_maps.png (what each conv stage makes of a few test images), mistakes.png (the
test images it got most confidently wrong).

Drawn with matplotlib's object API alone (`figure`, `save`), which report.py's plots share.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from cnnlab.config import override_text
from cnnlab.inspection import CONVS, conv_stages
from cnnlab.layer_names import ConvLayer, conv_layers, kernel_text, stage_title


def figure(width: float, height: float):
    """A figure without pyplot: no global backend to switch and no figure registry to
    leak, so plotting is safe in a notebook, a sweep's process or a headless job."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save(fig, path: Path) -> None:
    """`fig` laid out tight (nothing cut off, little margin) and written as a PNG of 110
    dpi. tight_layout leaves a placeholder layout engine on the figure, for which savefig
    would draw the whole figure once more, with no output, before the drawing it writes
    (0.1 s of the 0.9 s of CPU a 0-epoch digits run's four pictures took). Without an
    engine the file is the same."""
    fig.tight_layout()
    fig.set_layout_engine(None)
    fig.savefig(path, dpi=110)


def run_title(model, data: str) -> str:
    """What a run's pictures are titled with: its model and the model keys it sets away from
    their defaults, on its data ("lenet5 width=2 depth=2 on fashion_mnist"). `model`: the
    model's config (config.MLPConfig, LeNetConfig)."""
    default = type(model)()
    changed = [
        f"{f.name}={override_text(getattr(model, f.name))}"
        for f in dataclasses.fields(model)
        if f.name != "name" and getattr(model, f.name) != getattr(default, f.name)
    ]
    return textwrap.fill(" ".join([model.name, *changed, "on", data]), 60)


MAX_TILES = 64  # filters.png shows at most this many kernels


def _colormap(name: str, gaps: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=gaps)  # NaN: the gaps between tiles


def _diverging():
    """Red positive, blue negative, white zero, grey gaps."""
    return _colormap("RdBu_r", "0.35")


def mosaic(tiles: np.ndarray, cols: int, fill: float = np.nan) -> np.ndarray:
    """n tiles (n x h x w, or n x h x w x 3) on a grid `cols` wide, one pixel of `fill`
    between them: one image, so a picture of 64 kernels costs one imshow, not 64 axes."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles.shape[3:]), fill)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return out


def wrap(text: str, width: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width` inches at `fontsize` points (a character
    is taken as 0.6 em wide, a little wider than DejaVu Sans's average)."""
    chars = max(10, int(width * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


class FirstLayer(NamedTuple):
    """What filters.png shows: the layer's name ('conv 1', 'first dense layer'), its
    weights (filters x channels x *spatial), its window in words (None: a dense layer)
    and a note: for a conv, on what its kernels see or how they were drawn ('' if
    nothing to say); for a dense layer, what its rows are ('hidden units'). A multi-scale
    layer's `branches`: (kernel in words, filters, kernel shape) of each, in the order of
    its weights."""

    name: str
    weights: torch.Tensor
    kernel: str | None
    note: str = ""
    branches: tuple = ()


def first_layer_weights(model, input_shape=None) -> FirstLayer:
    """The first conv layer (a 1x1 conv in front of it mixes channels and has no picture to
    show), else the first dense layer with each row reshaped to the input (channels,
    *spatial): what the MLP's units look for."""
    layers = conv_layers(model)
    convs = [m for m in model.modules() if isinstance(m, CONVS)]
    if layers:
        return conv_layer_weights(layers[0], convs[0].in_channels)
    if convs:
        return FirstLayer("the first conv", convs[0].weight, "1x1")
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if input_shape is None:
        raise ValueError("plot_filters needs input_shape to show the dense layer's rows as inputs")
    units = "output units (one per class)" if len(dense) == 1 else "hidden units"
    return FirstLayer("first dense layer", dense[0].weight.reshape(-1, *input_shape), None, units)


def conv_layer_weights(layer: ConvLayer, input_channels: int) -> FirstLayer:
    """A conv layer's kernels: a factorised pair's halves composed into the k x k kernel
    they make together (no bias or activation lies between them); a multi-scale layer's
    branches side by side, each kernel centred on a tile the size of the widest (NaN
    around it: drawn as the gaps), or where a 1x1 bottleneck feeds some branches and not
    others the widest branch alone."""
    number, convs, text, kind, parts = layer
    name = f"conv {number}"
    if kind == "factorised":
        first, second = (conv.weight for conv in convs)
        weights = torch.einsum("mcy,omx->ocyx", first[..., 0], second[:, :, 0])
        return FirstLayer(name, weights, text, "the two halves composed")
    if kind == "branches" and len({conv.in_channels for conv in convs}) == 1:
        size = max(conv.weight.shape[2:] for conv in convs)
        tiles = [centred(conv.weight.detach(), size) for conv in convs]
        shares = zip(parts, convs, strict=True)
        branches = tuple(
            (part, conv.out_channels, tuple(conv.weight.shape[2:])) for part, conv in shares
        )
        counts = ", ".join(f"{part}: {count}" for part, count, _ in branches)
        text = f"in parallel branches ({counts})"
        return FirstLayer(name, torch.cat(tiles), text, branches=branches)
    conv = max(convs, key=lambda c: c.weight[0, 0].numel())  # a branch: the widest
    note = ""
    if conv.in_channels != input_channels:
        note = f"each over the {conv.in_channels} channels of the 1x1 conv before it"
    if kind == "branches":
        name += f" ({text}), its {parts[convs.index(conv)]} branch"
        return FirstLayer(name, conv.weight, kernel_text(conv), note)
    return FirstLayer(name, conv.weight, text, note)


def centred(weights: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """`weights` (filters x channels x *spatial) padded with NaN to `size`, centred."""
    pad = []
    for have, want in zip(reversed(weights.shape[2:]), reversed(size), strict=True):
        pad += [(want - have) // 2, want - have - (want - have) // 2]
    return torch.nn.functional.pad(weights.float(), pad, value=float("nan"))


def filters_title(first: FirstLayer, shown: int, shape: tuple[int, ...]) -> str:
    """'conv 1: 6 filters, 5x5'; 'first dense layer: weights of 64 of 128 hidden units,
    each shown as a 28x28 image'. `shape`: the weights' (filters, channels, *spatial)."""
    count, channels, *spatial = shape
    shown_text = f"{shown} of {count}" if shown < count else str(count)
    if first.kernel is None:  # a dense layer: its rows as inputs
        if len(spatial) == 1:
            look = f"a row of {spatial[0]} steps" + " per input channel" * (channels > 1)
        else:
            size = "x".join(map(str, spatial))
            look = {1: f"a {size} image", 3: f"a {size} colour image"}.get(
                channels, f"{channels} {size} images in a row"
            )
        return f"{first.name}: weights of {shown_text} {first.note}, each shown as {look}"
    parts = [f"{first.name}: {shown_text} filters, {first.kernel}"]
    if channels > 1 and not first.note and not (channels == 3 and len(spatial) == 2):
        parts.append(f"over {channels} input channels")
    return ", ".join([*parts, first.note] if first.note else parts)


def show(ax, image: np.ndarray, one_d: bool, cmap, **imshow):
    """imshow of a mosaic. A 1-D one (a row per filter or channel, no gap rows) is stretched
    to the axes, its rows split by hairlines in the gap colour: a gap row would be as tall
    as a row of data and hide 6 or 16 channels among stripes."""
    im = ax.imshow(
        image, cmap=cmap, interpolation="nearest", aspect="auto" if one_d else "equal", **imshow
    )
    if one_d:
        rows = np.arange(1, len(image)) - 0.5
        ax.hlines(rows, -0.5, image.shape[1] - 0.5, colors=[cmap.get_bad()], linewidth=0.8)
    return im


def plot_filters(model, path: Path, input_shape=None) -> None:
    """filters.png: the first conv layer's kernels on a grid, one colour scale centred on
    zero for all of them (the MLP: its first layer's weights as input-shaped images).

    2-D kernels of one input channel (or three, drawn as colour) tile a square grid; with
    more channels each row is a filter and each column an input channel. 1-D kernels are
    stripes, a row per filter. `input_shape` (channels, *spatial) is needed only for a
    model without convs.
    """
    first = first_layer_weights(model, input_shape)
    w = first.weights.detach().float().cpu()
    shape, one_d = tuple(w.shape), w.ndim == 3
    if one_d:
        w = w[:, :, None, :]
    channels = w.shape[1]
    rgb = channels == 3 and not one_d
    w = w[: max(1, MAX_TILES // (1 if rgb else channels)), :MAX_TILES]
    vmax = float(w.abs().nan_to_num().max()) or 1.0  # NaN: around a multi-scale layer's kernels
    if rgb:  # zero is mid-grey in every colour, NaN white as the gaps
        tiles = (w / (2 * vmax) + 0.5).permute(0, 2, 3, 1).nan_to_num(1.0).numpy()
    else:
        tiles = w.flatten(0, 1).numpy()
    # one image per filter: a square grid; else a row per filter, a column per channel
    square = rgb or (channels == 1 and not one_d)
    cols = int(np.ceil(np.sqrt(len(w)))) if square else w.shape[1]
    branches = first.branches if square and not rgb else ()
    if branches:  # a row per branch
        cols, tiles = by_branch(tiles, branches)
    image = mosaic(tiles, cols, fill=1.0 if rgb else np.nan)
    if one_d:  # rows one pixel high: drop the gap rows between them (show draws hairlines)
        image = image[::2]
    width = min(10.0, max(3.5, 4 * image.shape[1] / image.shape[0] + 1.5))
    fig = figure(width, 4.5 if not one_d else 3.5)
    ax = fig.add_subplot()
    # a title over the whole figure, wrapped to its width: one over the axes alone would be
    # centred left of the colour bar and run off a narrow figure's edge
    fig.suptitle(wrap(filters_title(first, len(w), shape), width, 9), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if rgb:
        ax.imshow(image, interpolation="nearest")
        ax.set_xlabel(f"weights / {2 * vmax:.3g} + 0.5 as RGB (grey = 0)", fontsize=8)
    else:
        im = show(ax, image, one_d, _diverging(), vmin=-vmax, vmax=vmax)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
        if branches:
            label_branches(ax, branches, tiles.shape[1:], cols)
        if channels > 1 or one_d:
            along = "tap" if first.kernel else "time step"
            unit = "filter" if first.kernel else "unit"
            ax.set(xlabel="input channel" if channels > 1 else along, ylabel=unit)
    save(fig, path)


def by_branch(tiles: np.ndarray, branches: tuple) -> tuple[int, np.ndarray]:
    """A multi-scale layer's tiles (filters x h x w, branch after branch) as rows of one
    branch each, NaN tiles after a branch with fewer filters: (columns, tiles)."""
    cols = min(16, max(count for _, count, _ in branches))
    rows = []
    start = 0
    for _, count, _ in branches:
        block = tiles[start : start + count][:cols]
        rows += [block, np.full((cols - len(block), *tiles.shape[1:]), np.nan)]
        start += count
    return cols, np.concatenate(rows)


def label_branches(ax, branches: tuple, tile: tuple[int, int], cols: int) -> None:
    """Each branch's row named on the y axis ('1x1: 2'), and each kernel outlined: a 1x1
    kernel is one pixel of a 5x5 tile, and one near zero is white on the grey gaps."""
    from matplotlib.patches import Rectangle

    h, w = tile
    ax.set_yticks(
        [r * (h + 1) + (h - 1) / 2 for r in range(len(branches))],
        [f"{part}: {count}" for part, count, _ in branches],
        fontsize=8,
    )
    for r, (_, count, (kh, kw)) in enumerate(branches):
        for c in range(min(count, cols)):
            corner = (c * (w + 1) + (w - kw) // 2 - 0.5, r * (h + 1) + (h - kh) // 2 - 0.5)
            ax.add_patch(Rectangle(corner, kw, kh, fill=False, ec="black", lw=0.8))


def maps_text(shape, shown: int) -> str:
    """'6 channels, 24x24', '16 of 32 channels, length 42': a stage's output (channels,
    *spatial) of which `shown` channels are drawn."""
    channels, *spatial = shape
    count = f"{shown} of {channels}" if shown < channels else str(channels)
    size = f"length {spatial[0]}" if len(spatial) == 1 else "x".join(map(str, spatial))
    return f"{count} channel{'s' * (channels > 1)}, {size}"


def plot_feature_maps(model, images: torch.Tensor, path: Path, max_channels: int = 16) -> int:
    """feature_maps.png: for each of `images` (a few normalised model inputs, N x C x ...,
    on the model's device) a row: the input, then the output of each conv stage, at most
    `max_channels` channels each. A stage's colour scale is shared by all rows, so rows
    (and runs given the same images) compare by eye. Returns the number of stages; draws
    nothing and returns 0 for a model without convs.
    """
    stages = conv_stages(model)
    if not stages:
        return 0
    outputs = stage_outputs(model, images, stages)
    layers = conv_layers(model)
    x = images.float().cpu()
    one_d = x.ndim == 3
    n = len(x)
    column = 1.9  # inches per column
    fig = figure(column * (1 + len(stages)), 1.9 * n + 0.9)
    axes = fig.subplots(n, 1 + len(stages), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        if one_d:
            ax.plot(x[i].T.numpy(), linewidth=0.8)
        elif x.shape[1] == 3:
            img = x[i].permute(1, 2, 0)
            ax.imshow(((img - img.min()) / (img.max() - img.min() + 1e-12)).numpy())
        else:
            ax.imshow(x[i, 0].numpy(), cmap="gray")
    axes[0, 0].set_title(f"input\n{maps_text(x.shape[1:], x.shape[1])}", fontsize=8)
    for j, (name, stage) in enumerate(stages, start=1):
        out = outputs[name][:, :max_channels]
        lo, hi = float(out.min()), float(out.max())
        # ReLU maps are >= 0: a sequential scale; anything signed: diverging, centred on 0
        if lo < 0:
            cmap, lo, hi = _diverging(), -max(-lo, hi), max(-lo, hi)
        else:
            cmap = _colormap("magma", "white")
        for i in range(n):
            maps = out[i].numpy()  # 1-D: channels x length, already a row per channel
            image = maps if one_d else mosaic(maps, int(np.ceil(np.sqrt(len(maps)))))
            im = show(axes[i, j], image, one_d, cmap, vmin=lo, vmax=hi or 1.0)
        # the column's one scale, under its last row
        bar = fig.colorbar(im, ax=axes[-1, j], location="bottom", fraction=0.08, pad=0.04)
        bar.ax.tick_params(labelsize=6)
        title = f"{stage_title(stage, layers)}\n{maps_text(outputs[name].shape[1:], out.shape[1])}"
        axes[0, j].set_title(wrap(title, column, 8), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"what each conv layer makes of {n} test images (one colour scale per column)",
        fontsize=9,
    )
    save(fig, path)
    return len(stages)


def stage_outputs(model, images: torch.Tensor, stages) -> dict[str, torch.Tensor]:
    """The output of each of `stages` ((name, module) pairs) on `images`, on the CPU, from
    one forward pass in eval mode."""
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda layer, inputs, output: outputs.__setitem__(name, output.float().cpu())

    hooks = [layer.register_forward_hook(keep(name)) for name, layer in stages]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return outputs


def plot_mistakes(images, y_true, y_pred, confidence, classes, path: Path, n: int = 16) -> int:
    """The test images the model got most confidently wrong, labelled true / predicted.

    `images` are the test images as loaded (N x C x H x W), or series (N x C x length),
    drawn as lines. Returns how many were shown. Images are one mosaic on one axes: 16
    axes of their own cost about half a second of every run. The figure is sized to the
    grid, so the images fill it.
    """
    wrong = (y_pred != y_true).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:n].tolist()
    labels = [
        f"true: {classes[y_true[i]]}\npred: {classes[y_pred[i]]} "
        f"({100 * float(confidence[i]):.0f}%)"
        for i in order
    ]
    cols = min(4, max(1, len(order)))
    rows = max(1, -(-len(order) // cols))
    width = max(4.0, 2.3 * cols)  # room for the title above even one image
    title = wrap("most confident mistakes (true class, predicted class, confidence)", width, 9)
    above = 0.2 * (title.count("\n") + 1) + 0.2  # inches for the title
    if images.dim() == 3:  # series: one small plot each, one line per channel
        fig = figure(width, 2.4 * rows + above)
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(order) :]:
            ax.axis("off")
        for ax, i, label in zip(axes.flat, order, labels, strict=False):
            ax.plot(images[i].T.numpy(), linewidth=0.8)
            ax.set_title(label, fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in axes.flat[max(0, len(order) - cols) : len(order)]:  # each column's last
            ax.set_xlabel("time step", fontsize=7)
        ax = axes.flat[0]
    elif order:
        tiles = images[order].permute(0, 2, 3, 1).float().numpy() / 255
        h, w = tiles.shape[1:3]
        tiles = tiles[..., 0] if tiles.shape[-1] == 1 else tiles
        # below each tile (2.3 inches wide), room for its two-line label: 0.4 inches
        room = int(np.ceil(0.4 * (w + 1) / 2.3))
        gaps = np.full((len(tiles), room, *tiles.shape[2:]), np.nan)
        image = mosaic(np.concatenate([tiles, gaps], 1), cols)
        fig = figure(width, 2.3 * cols * image.shape[0] / image.shape[1] + above)
        ax = fig.subplots()
        ax.axis("off")
        ax.imshow(image, cmap=_colormap("gray", "white"))
        for k, label in enumerate(labels):
            r, c = divmod(k, cols)
            x, y = c * (w + 1) + w / 2, r * (h + room + 1) + h + 0.5
            ax.text(x, y, label, ha="center", va="top", fontsize=7)
    else:
        fig = figure(width, 1.5)
        ax = fig.subplots()
        ax.axis("off")
    if not order:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=9)
    save(fig, path)
    return len(order)
