"""The pictures of what a run's model does: filters.png (its first layer's weights),
feature_maps.png (what each conv stage makes of a few test images), mistakes.png (the
test images it got most confidently wrong) and erf.png (its effective receptive field).

Drawn with matplotlib's object API alone (`figure`), which report.py's plots share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.inspection import CONVS, conv_stages, effective_receptive_field, per_axis
from cnnlab.models import Residual


def figure(width: float, height: float):
    """A figure without pyplot: no global backend to switch and no figure registry to
    leak, so plotting is safe in a notebook, a sweep's process or a headless job."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


MAX_TILES = 64  # filters.png shows at most this many kernels
ROW_HEIGHT = 6  # feature_maps.png: pixels per channel of a 1-D map


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


def conv_numbers(model) -> dict[str, int]:
    """Each conv layer's module name -> its place among the model's convs (1, 2, ...):
    the names a reader uses ("conv 1"), where module paths say `features.0.0.0`."""
    convs = [n for n, m in model.named_modules() if isinstance(m, CONVS)]
    return {name: k for k, name in enumerate(convs, start=1)}


def conv_title(number: int, conv) -> str:
    """`conv 1: 6 filters, 5x5`, with stride and dilation where they are not 1."""
    kernel = "x".join(map(str, conv.kernel_size))
    extras = [f"{key} {'x'.join(map(str, v))}" for key, v in
              (("stride", conv.stride), ("dilation", conv.dilation)) if set(v) != {1}]  # fmt: skip
    return ", ".join([f"conv {number}: {conv.out_channels} filters, {kernel}", *extras])


def stage_title(model, name: str, stage) -> str:
    """A feature-map column's first line: the convs whose output it shows (`conv 1 (5x5)`,
    `convs 3-4`), by their place in the model."""
    numbers = conv_numbers(model)
    inside = [numbers[f"{name}.{n}" if n else name] for n, m in stage.named_modules()
              if isinstance(m, CONVS)]  # fmt: skip
    if len(inside) == 1:
        conv = next(m for m in stage.modules() if isinstance(m, CONVS))
        return f"conv {inside[0]} ({'x'.join(map(str, conv.kernel_size))})"
    convs = f"convs {min(inside)}-{max(inside)}"
    return f"residual stage, {convs}" if isinstance(stage, Residual) else convs


def first_layer_weights(model, input_shape=None) -> tuple[str, torch.Tensor]:
    """(layer name, weights as filters x channels x *spatial) for filters.png.

    The first conv with more than one tap (a 1x1 bottleneck in front of it mixes channels
    and has no picture to show), else the first dense layer with each row reshaped to the
    input (channels, *spatial): what the MLP's units look for, its "templates".
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, CONVS)]
    if convs:
        name, conv = next(((n, m) for n, m in convs if m.weight[0, 0].numel() > 1), convs[0])
        return name, conv.weight
    name, dense = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear))
    if input_shape is None:
        raise ValueError(f"plot_filters needs input_shape to show {name}'s rows as inputs")
    return name, dense.weight.reshape(-1, *input_shape)


def plot_filters(model, path: Path, input_shape=None) -> None:
    """filters.png: the first conv layer's kernels on a grid, one colour scale centred on
    zero for all of them (the MLP: its first layer's weights as input-shaped images).

    2-D kernels of one input channel (or three, drawn as colour) tile a square grid; with
    more channels each row is a filter and each column an input channel. 1-D kernels are
    one-pixel-high stripes, a row per filter. `input_shape` (channels, *spatial) is needed
    only for a model without convs.
    """
    name, weights = first_layer_weights(model, input_shape)
    layer = dict(model.named_modules())[name]
    w = weights.detach().float().cpu()
    one_d = w.ndim == 3
    if one_d:
        w = w[:, :, None, :]
    filters, channels, kh, kw = w.shape
    rgb = channels == 3 and not one_d
    w = w[: max(1, MAX_TILES // (1 if rgb else channels)), :MAX_TILES]
    vmax = float(w.abs().max()) or 1.0
    if rgb:  # zero is mid-grey in every colour
        tiles = (w / (2 * vmax) + 0.5).permute(0, 2, 3, 1).numpy()
    else:
        tiles = w.flatten(0, 1).numpy()
    # one image per filter: a square grid; else a row per filter, a column per channel
    square = rgb or (channels == 1 and not one_d)
    cols = int(np.ceil(np.sqrt(len(w)))) if square else w.shape[1]
    image = mosaic(tiles, cols, fill=1.0 if rgb else np.nan)
    aspect = image.shape[1] / image.shape[0]
    fig = figure(min(10.0, max(3.5, 4 * aspect + 1.5)), 4.5 if not one_d else 3.5)
    ax = fig.add_subplot()
    ax.set_title(filters_title(model, name, layer, len(w), channels), fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    if rgb:
        ax.imshow(image, interpolation="nearest")
        ax.set_xlabel(f"weights / {2 * vmax:.3g} + 0.5 as RGB (grey = 0)", fontsize=8)
    else:
        im = ax.imshow(
            image,
            cmap=_diverging(),
            vmin=-vmax,
            vmax=vmax,
            interpolation="nearest",
            aspect="auto" if one_d else "equal",
        )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
        if channels > 1 or one_d:
            ax.set(xlabel="input channel" if channels > 1 else "tap", ylabel="filter")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def filters_title(model, name: str, layer, shown: int, channels: int) -> str:
    """filters.png's title in a reader's words: which conv and what its kernels are (or, for
    a model without convs, what the first dense layer's rows are), on lines that fit."""
    if isinstance(layer, nn.Linear):
        units = layer.out_features
        part = f"{shown} of {units}" if shown < units else f"all {units}"
        return (
            f"first dense layer: the weights of {part} hidden units,\n"
            f"each drawn in the shape of the input it reads"
        )
    title = conv_title(conv_numbers(model)[name], layer)
    if shown < layer.out_channels:
        title += f" ({shown} shown)"
    if channels > 1:
        title += f",\neach over {channels} input channels"
    return title


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
    x = images.float().cpu()
    one_d = x.ndim == 3
    n = len(x)
    fig = figure(1.9 * (1 + len(stages)), 1.9 * n + 0.4)
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
    axes[0, 0].set_title("input " + "x".join(map(str, x.shape[1:])), fontsize=8)
    for j, (name, _) in enumerate(stages, start=1):
        out = outputs[name][:, :max_channels]
        lo, hi = float(out.min()), float(out.max())
        # ReLU maps are >= 0: a sequential scale; anything signed: diverging, centred on 0
        if lo < 0:
            cmap, lo, hi = _diverging(), -max(-lo, hi), max(-lo, hi)
        else:
            cmap = _colormap("magma", "white")
        for i in range(n):
            # a series' channel is a stripe ROW_HEIGHT pixels high: the one-pixel gaps
            # between channels stay thin beside them
            maps = out[i][:, None, :].repeat(1, ROW_HEIGHT, 1) if one_d else out[i]
            cols = 1 if one_d else int(np.ceil(np.sqrt(len(maps))))
            axes[i, j].imshow(
                mosaic(maps.numpy(), cols),
                cmap=cmap,
                vmin=lo,
                vmax=hi or 1.0,
                interpolation="nearest",
                aspect="auto" if one_d else "equal",
            )
        channels, *size = outputs[name].shape[1:]
        shown = (
            f"{min(channels, max_channels)} of {channels}" if channels > max_channels else channels
        )
        size = "x".join(map(str, size))
        title = f"{stage_title(model, name, stages[j - 1][1])}\n{shown} channels, {size}"
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def plot_effective_receptive_field(
    model, images: torch.Tensor, receptive_field, path: Path
) -> bool:
    """erf.png: the effective receptive field (the input gradient of the last feature map's
    centre unit, averaged over `images`) with the theoretical `receptive_field` (int or
    per axis, as inspect_model gives it) outlined. Returns False, drawing nothing, for a
    model without convs."""
    from matplotlib.patches import Rectangle

    erf = effective_receptive_field(model, images)
    if erf is None:
        return False
    rf = per_axis(receptive_field, erf.ndim)
    erf = (erf / (erf.max() or 1.0)).numpy()
    # the theoretical field sits where the gradient is non-zero (seen by some image)
    seen = [
        np.flatnonzero(erf.max(axis=tuple(a for a in range(erf.ndim) if a != i)))
        for i in range(erf.ndim)
    ]
    centre = [
        (s[0] + s[-1]) / 2 if len(s) else (n - 1) / 2 for s, n in zip(seen, erf.shape, strict=True)
    ]
    fig = figure(4.5, 4 if erf.ndim == 2 else 2.8)
    ax = fig.add_subplot()
    title = "x".join(map(str, rf))
    if erf.ndim == 2:
        im = ax.imshow(erf, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|gradient| / max")
        corner = (centre[1] - rf[1] / 2, centre[0] - rf[0] / 2)
        ax.add_patch(Rectangle(corner, rf[1], rf[0], fill=False, ec="cyan", ls="--", lw=1.5))
        ax.set(xlim=(-0.5, erf.shape[1] - 0.5), ylim=(erf.shape[0] - 0.5, -0.5))
    else:
        ax.plot(erf, color="black")
        ax.axvspan(centre[0] - rf[0] / 2, centre[0] + rf[0] / 2, color="cyan", alpha=0.3)
        ax.set(xlabel="input position", ylabel="|gradient| / max")
    ax.set_title(
        f"effective receptive field of the centre unit, {len(images)} images\n"
        f"dashed / shaded: the theoretical field, {title}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def label_room(h: int) -> int:
    """Rows of pixels under a tile of height h for its two-line label (a quarter of a tile
    is about two lines of 7-point text at mistakes.png's size)."""
    return max(4, h // 4) + 2


def plot_mistakes(images, y_true, y_pred, confidence, classes, path: Path, n: int = 16) -> int:
    """The test images the model got most confidently wrong, labelled true / predicted.

    `images` are the test images as loaded (N x C x H x W), or series (N x C x length),
    drawn as lines. Returns how many were shown. Images are one mosaic on one axes: 16
    axes of their own cost about half a second of every run.
    """
    wrong = (y_pred != y_true).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:n].tolist()
    labels = [
        f"true: {classes[y_true[i]]}\npred: {classes[y_pred[i]]} "
        f"({100 * float(confidence[i]):.0f}%)"
        for i in order
    ]
    cols = 4
    rows = max(1, -(-len(order) // cols))
    if images.dim() == 3 or not order:
        fig = figure(2.3 * cols, 2.4 * rows)
    else:  # as tall as the mosaic of tiles and labels is, for its width: no empty margins
        h, w = images.shape[2:]
        fig = figure(
            2.3 * cols, 2.3 * cols * rows * (h + label_room(h) + 1) / (cols * (w + 1)) + 0.4
        )
    if images.dim() == 3:  # series: one small plot each, one line per channel
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i, label in zip(axes.flat, order, labels, strict=False):
            ax.plot(images[i].T.numpy(), linewidth=0.8)
            ax.set_title(label, fontsize=8)
        ax = axes.flat[0]
    else:
        ax = fig.subplots()
        ax.axis("off")
        if order:
            tiles = images[order].permute(0, 2, 3, 1).float().numpy() / 255
            h, w = tiles.shape[1:3]
            tiles = tiles[..., 0] if tiles.shape[-1] == 1 else tiles
            # below each tile, room for its two-line label
            room = np.full((len(tiles), label_room(h), *tiles.shape[2:]), np.nan)
            ax.imshow(
                mosaic(np.concatenate([tiles, room], 1), cols), cmap=_colormap("gray", "white")
            )
            for k, label in enumerate(labels):
                r, c = divmod(k, cols)
                x, y = c * (w + 1) + w / 2, r * (h + label_room(h) + 1) + h + 0.5
                ax.text(x, y, label, ha="center", va="top", fontsize=7)
    if not order:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("most confident mistakes (true class, predicted class, confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return len(order)
