"""Everything a run folder holds besides the checkpoint and Hydra's files.

metrics.json, history.csv, loss_curve.png, confusion_matrix.png and .csv, and when to draw
mistakes.png (the pictures of the model itself are drawn in pictures.py, trackers such as
TensorBoard live in loggers.py). Every file a run writes, the checkpoint
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

from cnnlab import files, pictures

# history.csv's columns: a run with a validation split evaluates on it after each epoch
# (val_*), one without on the test set (test_*); each run writes the columns its rows have
EPOCH_FIGURES = ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS = ["epoch", "seed", *EPOCH_FIGURES, "seconds"]
NO_VALIDATION = [column for column in HISTORY_COLUMNS if not column.startswith("val_")]
EVALUATION_FILES = ("confusion_matrix.csv", "confusion_matrix.png", "mistakes.png")


def write_json(path: Path, obj: dict) -> None:
    files.write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_history(path: Path, history: list[dict]) -> None:
    # no rows yet (0 epochs): the columns of a run without validation
    columns = [k for k in HISTORY_COLUMNS if k in (history[0] if history else NO_VALIDATION)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in columns} for row in history)
    files.write_atomic(path, buf.getvalue())


def by_epoch(history: list[dict]) -> dict[int, list[dict]]:
    """History rows (one per epoch and seed) grouped by epoch, in order."""
    epochs: dict[int, list[dict]] = {}
    for row in history:
        epochs.setdefault(row["epoch"], []).append(row)
    return epochs


def mean_row(rows: list[dict]) -> dict:
    """One epoch's rows (a row per seed) as one row of means, for per-epoch trackers."""
    figures = [key for key in EPOCH_FIGURES if key in rows[0]]
    mean = {key: statistics.fmean(row[key] for row in rows) for key in figures}
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


MARKED_EPOCHS = 30  # a loss curve of at most this many epochs marks each epoch


def plot_loss_curve(
    history: list[dict], path: Path, title: str, planned: int | None = None, status="completed"
) -> None:
    """Train and validation (else test) loss per epoch; with several seeds, their mean and a
    band from the lowest to the highest seed (one epoch: points, and a bar for the seeds'
    range). A run that ended before its `planned` epochs, or whose `status` is not
    completed, says so in red under the title."""
    fig = pictures.figure(6, 4)
    ax = fig.subplots()
    epochs = by_epoch(history)
    seeds = len(next(iter(epochs.values())))
    marks = len(epochs) <= MARKED_EPOCHS
    for key, style, label in (
        ("train_loss", "o-", "train loss (mean per epoch)"),
        ("val_loss", "s--", "validation loss"),
        ("test_loss", "s--", "test loss"),
    ):
        if key not in history[0]:
            continue
        values = np.array([[row[key] for row in rows] for rows in epochs.values()])
        style = style if marks else style[1:]
        (line,) = ax.plot(list(epochs), values.mean(1), style, label=label)
        low, high = values.min(1), values.max(1)
        if seeds > 1 and len(epochs) > 1:
            ax.fill_between(list(epochs), low, high, color=line.get_color(), alpha=0.2)
        elif seeds > 1:  # one epoch is a point: its spread a bar, not a sliver of band
            ax.vlines(list(epochs), low, high, color=line.get_color(), alpha=0.5, linewidth=3)
    if seeds > 1:
        spread = "band" if len(epochs) > 1 else "bar"
        title += f"\n({seeds} seeds: mean, {spread} from lowest to highest)"
    done, incomplete = max(epochs), status != "completed"
    if incomplete or (planned and done < planned):
        ended = status if incomplete else "stopped early"
        title += f"\n{ended} after {done}{f' of {planned}' if planned else ''} epochs"
    ax.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax.set_title(title, **({"color": "firebrick"} if incomplete else {}))
    # whole epochs only: a few are each a tick (one epoch alone is not a band of 0.96-1.04)
    if len(epochs) <= 12:
        ax.set_xticks(list(epochs))
        if len(epochs) == 1:
            ax.set_xlim(min(epochs) - 1, min(epochs) + 1)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, frameon=False)
    pictures.save(fig, path)


def plot_confusion_matrix(cm: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    """Counts as an annotated heatmap. Drawn with matplotlib alone: seaborn's heatmap looks
    the same, but importing seaborn (with pandas and scipy.stats) took 1.4 s of each run."""
    k = len(classes)
    size = max(5.0, 0.55 * k + 2)
    fig = pictures.figure(size + 1, size)
    ax = fig.subplots()
    counts = cm.numpy()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)  # as tall as the matrix
    dark = counts.max() / 2  # white text on the darker half of the scale
    for (i, j), count in np.ndenumerate(counts):
        color = "white" if count > dark else "black"
        cell = ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
        cell.set_in_layout(False)  # inside the axes: tight_layout need not measure k x k texts
    # short names (digits) read level; longer ones slanted, so that they do not overlap
    slanted = max(map(len, classes)) > 3
    ax.set_xticks(range(k), classes, rotation=45 * slanted, ha="right" if slanted else "center")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    pictures.save(fig, path)


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
            lambda: pictures.plot_mistakes(
                dataset.x_test, y, shown.predictions, shown.confidence, classes, mistakes
            ),
        ),  # fmt: skip
    ]
