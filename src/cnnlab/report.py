"""Everything a run folder holds besides the checkpoint and Hydra's files.

metrics.json, history.csv, loss_curve.png, confusion_matrix.png and .csv, mistakes.png,
and (with logger=tensorboard) TensorBoard scalars. JSON and CSV are written to a temporary
file and renamed, so a crash mid-write never leaves a half file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

HISTORY_COLUMNS = ["epoch", "train_loss", "test_loss", "test_accuracy", "seconds"]


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in HISTORY_COLUMNS} for row in history)
    write_atomic(path, buf.getvalue())


# ---- classification figures --------------------------------------------------------------


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, k: int) -> torch.Tensor:
    """k x k counts; row = true class, column = predicted class."""
    return torch.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def per_class_scores(cm: torch.Tensor, classes: list[str]) -> tuple[dict, float]:
    """Precision, recall, F1 and support per class, and the macro F1 (an unweighted mean).

    A class never predicted has precision 0, as scikit-learn's zero_division=0 gives.
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
    return scores, float(f1.mean())


def write_confusion_csv(path: Path, cm: torch.Tensor, classes: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm.tolist(), strict=True):
        writer.writerow([name, *row])
    write_atomic(path, buf.getvalue())


# ---- plots -------------------------------------------------------------------------------


def _figure(**kwargs):
    """A figure without pyplot: no global backend to switch and no figure registry to
    leak, so plotting is safe in a notebook, a sweep's process or a headless job."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_loss_curve(history: list[dict], path: Path, title: str) -> None:
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss (mean per epoch)")
    ax.plot(epochs, [r["test_loss"] for r in history], "s--", label="test loss")
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
    fig = _figure(figsize=(size + 1, size))
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
    """The test images the model got most confidently wrong, titled true -> predicted.

    `images` are the uint8 test images (N x C x H x W). Returns how many were shown.
    """
    wrong = (y_pred != y_true).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:n]
    cols = 4
    rows = max(1, (len(order) + cols - 1) // cols)
    fig = _figure(figsize=(2.3 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order.tolist(), strict=False):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray")
        ax.set_title(
            f"true: {classes[y_true[i]]}\npred: {classes[y_pred[i]]} "
            f"({100 * float(confidence[i]):.0f}%)",
            fontsize=8,
        )
    if len(order) == 0:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes (true class, predicted class, confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return len(order)


def write_evaluation(run_dir: Path, evaluation, y_test, x_test_uint8, classes, title) -> dict:
    """confusion_matrix.csv/.png and mistakes.png; returns accuracy, f1_macro, per_class."""
    cm = confusion_matrix(y_test.cpu(), evaluation.predictions, len(classes))
    per_class, f1_macro = per_class_scores(cm, classes)
    write_confusion_csv(run_dir / "confusion_matrix.csv", cm, classes)
    plot_confusion_matrix(cm, classes, run_dir / "confusion_matrix.png", title)
    plot_mistakes(
        x_test_uint8,
        y_test.cpu(),
        evaluation.predictions,
        evaluation.confidence,
        classes,
        run_dir / "mistakes.png",
    )
    return {"accuracy": evaluation.accuracy, "f1_macro": f1_macro, "per_class": per_class}


def write_run(run_dir: Path, metrics: dict, history, evaluation, dataset, title: str) -> dict:
    """What a finished or stopped run leaves: history.csv, loss_curve.png, the evaluation
    files (when there is an evaluation), and metrics.json last, so that its presence means
    the rest is there."""
    write_history(run_dir / "history.csv", history)
    if history:
        plot_loss_curve(history, run_dir / "loss_curve.png", title)
    if evaluation is not None:
        title = f"{title}: {100 * evaluation.accuracy:.2f}%"
        metrics |= write_evaluation(
            run_dir, evaluation, dataset.y_test, dataset.x_test, dataset.classes, title
        )
    write_json(run_dir / "metrics.json", metrics)
    return metrics


class TensorBoardLogger:
    """Per-epoch scalars in <run>/tensorboard, for users who compare curves there."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, row: dict) -> None:
        for key in ("train_loss", "test_loss", "test_accuracy", "seconds"):
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
