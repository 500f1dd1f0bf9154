"""Everything a run folder holds besides the checkpoint and Hydra's files.

metrics.json, history.csv, loss_curve.png, confusion_matrix.png and .csv, mistakes.png
(trackers such as TensorBoard live in loggers.py). Every file a run writes, the checkpoint
too, goes through files.atomic_file: a crash or a full disk mid-write never leaves a half file.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab import files
from cnnlab.inspection import CONVS, conv_stages, effective_receptive_field, per_axis

HISTORY_COLUMNS = ["epoch", "seed", "train_loss", "test_loss", "test_accuracy", "seconds"]
EPOCH_FIGURES = ("train_loss", "test_loss", "test_accuracy")
EVALUATION_FILES = ("confusion_matrix.csv", "confusion_matrix.png", "mistakes.png")


def write_json(path: Path, obj: dict) -> None:
    files.write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in HISTORY_COLUMNS} for row in history)
    files.write_atomic(path, buf.getvalue())


def by_epoch(history: list[dict]) -> dict[int, list[dict]]:
    """History rows (one per epoch and seed) grouped by epoch, in order."""
    epochs: dict[int, list[dict]] = {}
    for row in history:
        epochs.setdefault(row["epoch"], []).append(row)
    return epochs


def mean_row(rows: list[dict]) -> dict:
    """One epoch's rows (a row per seed) as one row of means, for per-epoch trackers."""
    mean = {key: statistics.fmean(row[key] for row in rows) for key in EPOCH_FIGURES}
    return {"epoch": rows[0]["epoch"], **mean, "seconds": rows[0]["seconds"]}


# ---- classification figures --------------------------------------------------------------


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, k: int) -> torch.Tensor:
    """k x k counts; row = true class, column = predicted class."""
    return torch.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def per_class_scores(cm: torch.Tensor, classes: list[str]) -> tuple[dict, float]:
    """Precision, recall, F1 and support per class, and the macro F1: the unweighted mean
    of F1 over the classes present in the labels or the predictions, as scikit-learn's
    f1_score(average="macro") takes it. A class absent from both has no F1 to average
    (it is listed with zeros); a class never predicted has precision 0 (zero_division=0).
    """
    cm = cm.double()
    tp = cm.diag()
    predicted, support = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    scores = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    present = (predicted > 0) | (support > 0)
    return scores, float(f1[present].mean()) if present.any() else 0.0


def write_confusion_csv(path: Path, cm: torch.Tensor, classes: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm.tolist(), strict=True):
        writer.writerow([name, *row])
    files.write_atomic(path, buf.getvalue())


# ---- plots -------------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A figure without pyplot: no global backend to switch and no figure registry to
    leak, so plotting is safe in a notebook, a sweep's process or a headless job."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_loss_curve(history: list[dict], path: Path, title: str) -> None:
    """Train and test loss per epoch; with several seeds, their mean and a band from the
    lowest to the highest seed."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    epochs = by_epoch(history)
    seeds = len(next(iter(epochs.values())))
    for key, style, label in (
        ("train_loss", "o-", "train loss (mean per epoch)"),
        ("test_loss", "s--", "test loss"),
    ):
        values = np.array([[row[key] for row in rows] for rows in epochs.values()])
        (line,) = ax.plot(list(epochs), values.mean(1), style, label=label)
        if seeds > 1:
            low, high = values.min(1), values.max(1)
            ax.fill_between(list(epochs), low, high, color=line.get_color(), alpha=0.2)
    if seeds > 1:
        title += f" ({seeds} seeds: mean, band from lowest to highest)"
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_confusion_matrix(cm: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    """Counts as an annotated heatmap. Drawn with matplotlib alone: seaborn's heatmap looks
    the same, but importing seaborn (with pandas and scipy.stats) took 1.4 s of each run."""
    k = len(classes)
    size = max(5.0, 0.55 * k + 2)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    counts = cm.numpy()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)  # as tall as the matrix
    dark = counts.max() / 2  # white text on the darker half of the scale
    for (i, j), count in np.ndenumerate(counts):
        color = "white" if count > dark else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
    fig = _figure(2.3 * cols, 2.4 * rows)
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
            room = np.full((len(tiles), h // 2 + 2, *tiles.shape[2:]), np.nan)
            ax.imshow(
                mosaic(np.concatenate([tiles, room], 1), cols), cmap=_colormap("gray", "white")
            )
            for k, label in enumerate(labels):
                r, c = divmod(k, cols)
                x, y = c * (w + 1) + w / 2, r * (h + h // 2 + 3) + h + 0.5
                ax.text(x, y, label, ha="center", va="top", fontsize=7)
    if not order:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("most confident mistakes (true class, predicted class, confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return len(order)


def evaluation_figures(evaluations: list, state, dataset) -> tuple[dict, torch.Tensor]:
    """The figures metrics.json holds, and the confusion matrix.

    With several seeds: accuracy and f1_macro are the means over the copies that did not
    diverge (with their std and each seed's own figures), and the confusion matrix and
    per_class sum those copies' counts."""
    y, classes = dataset.y_test.cpu(), dataset.classes
    per_seed, matrices = [], []
    for seed, evaluation in zip(state.seeds, evaluations, strict=True):
        if seed in state.diverged:
            per_seed.append({"seed": seed, "accuracy": None, "f1_macro": None,
                             "status": "diverged"})  # fmt: skip
            continue
        matrices.append(confusion_matrix(y, evaluation.predictions, len(classes)))
        f1_macro = per_class_scores(matrices[-1], classes)[1]
        per_seed.append({"seed": seed, "accuracy": evaluation.accuracy, "f1_macro": f1_macro,
                         "status": "completed"})  # fmt: skip
    done = [row for row in per_seed if row["status"] == "completed"]
    cm = sum(matrices)

    def spread(key: str) -> float | None:
        return statistics.stdev(r[key] for r in done) if len(done) > 1 else None

    figures = {
        "accuracy": statistics.fmean(row["accuracy"] for row in done),
        "f1_macro": statistics.fmean(row["f1_macro"] for row in done),
        "accuracy_std": spread("accuracy"),
        "f1_macro_std": spread("f1_macro"),
        "per_class": per_class_scores(cm, classes)[0],
        "per_seed": per_seed,
    }
    return figures, cm


def evaluation_files(run_dir: Path, figures: dict, cm, evaluations, state, dataset, title: str):
    """confusion_matrix.csv/.png and mistakes.png (the copy state.shown_copy() names), as
    (file name, function that writes it) to be called one by one."""
    y, classes = dataset.y_test.cpu(), dataset.classes
    copies = sum(row["status"] == "completed" for row in figures["per_seed"])
    title = f"{title}: {100 * figures['accuracy']:.2f}%"
    if copies > 1:
        title += f"\ncounts summed over {copies} seeds"
    shown = evaluations[state.shown_copy()]
    csv_file, png, mistakes = (run_dir / name for name in EVALUATION_FILES)
    return [
        (csv_file.name, lambda: write_confusion_csv(csv_file, cm, classes)),
        (png.name, lambda: plot_confusion_matrix(cm, classes, png, title)),
        (
            mistakes.name,
            lambda: plot_mistakes(
                dataset.x_test, y, shown.predictions, shown.confidence, classes, mistakes
            ),
        ),  # fmt: skip
    ]


# ---- what the filters see ------------------------------------------------------------------

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
    fig = _figure(min(10.0, max(3.5, 4 * aspect + 1.5)), 4.5 if not one_d else 3.5)
    ax = fig.add_subplot()
    shown = f"{len(w)} of {filters}" if len(w) < filters else str(filters)
    kernel = f"{kw}" if one_d else f"{kh}x{kw}"
    ax.set_title(f"{name}: {shown} filters, {kernel}, {channels} input channel(s)", fontsize=9)
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

    x = images.float().cpu()
    one_d = x.ndim == 3
    n = len(x)
    fig = _figure(1.9 * (1 + len(stages)), 1.9 * n + 0.4)
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
            maps = out[i][:, None, :] if one_d else out[i]
            cols = 1 if one_d else int(np.ceil(np.sqrt(len(maps))))
            axes[i, j].imshow(
                mosaic(maps.numpy(), cols),
                cmap=cmap,
                vmin=lo,
                vmax=hi or 1.0,
                interpolation="nearest",
                aspect="auto" if one_d else "equal",
            )
        shape = "x".join(map(str, outputs[name].shape[1:]))
        axes[0, j].set_title(f"{name}\n{shape}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return len(stages)


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
    fig = _figure(4.5, 4 if erf.ndim == 2 else 2.8)
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
