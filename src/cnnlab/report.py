"""Everything a run folder holds besides the checkpoint and Hydra's files.

A run hands what it got to (Results) to write_run, whatever ended it: loss_curve.png,
confusion_matrix.png and .csv, mistakes.png, filters.png and feature_maps.png (drawn by
pictures.py), then metrics.json, built by metrics_record with one schema for every status
and written once, then the tracker's final() (trackers such as TensorBoard live in
loggers.py). history.csv is written after each epoch (write_history). Every file a run
writes, the checkpoint too, goes through files.atomic_file: a crash or a full disk
mid-write never leaves a half file.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import files, loggers, measures, pictures
from cnnlab.outcome import Outcome, Status

# the run's own logger (train.log): a `warning:` line here is one of metrics.json's warnings
log = logging.getLogger("cnnlab")

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
    y = dataset.y_test.cpu()
    classes = dataset.classes
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
    y = dataset.y_test.cpu()
    classes = dataset.classes
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


# ---- the run folder ------------------------------------------------------------------------


@dataclass
class Results:
    """What a run hands over to be written: what it got to before it ended. Each field is
    None until the run reaches it, so that a run that stopped anywhere has the same record
    as one that completed, with None where it got no figure."""

    model: str  # the composed config's model.name, data.name, seed: known from the start
    data: str
    seed: int
    warnings: list[str]  # every `warning:` the run logged, growing as it goes
    config: Any = None  # the TrainConfig, once checked
    started_at: str | None = None
    device: str | None = None
    device_name: str | None = None
    validation: dict | None = None  # which training images were held out
    numerics: dict | None = None  # the numeric flags in effect while training
    described: dict | None = None  # the model's figures: params, macs, receptive field, ...
    state: Any = None  # loop.RunState, once the model is built
    training: Any = None  # loop.Training: its path, and each copy for the pictures
    dataset: Any = None  # data.Dataset as loaded (uint8: mistakes.png shows these images)
    tensors: Any = None  # engine.TrainData on the device
    input_shape: tuple | None = None
    memory: dict | None = None  # the run's peak memory, read once training ended
    threads: int | None = None  # the CPU threads the run trained with
    evaluations: list | None = None  # each copy's test Evaluation (None: diverged, stopped)
    measured: list[dict] | None = None  # measures.measure's figures per copy
    measure_seconds: float | None = None
    figures: dict | None = None  # run_figures': what metrics.json says of the trained copies
    confusion: torch.Tensor | None = None  # summed over the copies (None: no evaluation)
    trained: Outcome | None = None  # how training ended: the files draw what it got to
    tracker: loggers.RunLogger = field(default_factory=loggers.RunLogger)


def validation_figures(state) -> dict:
    """val_accuracy and best_epoch (None without a validation split), and each copy's own
    by seed (per_seed)."""
    if state.selection is None:
        return {"val_accuracy": None, "best_epoch": None, "per_seed": {}}
    last = {row["seed"]: row["val_accuracy"] for row in state.history}  # the latest epoch's
    return state.selection.figures(state.seeds, state.live(), [last.get(s) for s in state.seeds])


def run_figures(r: Results) -> tuple[dict, torch.Tensor | None]:
    """The figures of a run that trained, and the confusion matrix (None without a test
    evaluation): validation figures; with a test evaluation the classification figures,
    each copy's row (per_seed) with its validation figures and measurements, and the
    measurements' means over the copies."""
    chosen = validation_figures(r.state)
    figures = {"val_accuracy": chosen["val_accuracy"], "best_epoch": chosen["best_epoch"]}
    if r.evaluations is None:
        return figures, None
    test, cm = evaluation_figures(r.evaluations, r.state, r.dataset)
    for row, extra in zip(test["per_seed"], r.measured, strict=True):
        row |= chosen["per_seed"].get(row["seed"], {}) | extra
    means = measures.mean_of(r.measured)
    return figures | test | means | {"measure_seconds": r.measure_seconds}, cm


def metrics_record(r: Results, outcome: Outcome) -> dict:
    """metrics.json: the same keys whatever the status, None where the run got no figure.
    `error` says why a run did not complete."""
    state, cfg, f = r.state, r.config, r.figures or {}
    model = r.described or {}
    memory = r.memory or {}
    seconds = state.train_seconds if state else None
    return {
        "status": str(outcome.status),
        "model": r.model,
        "data": r.data,
        "params": model.get("params"),
        "macs": model.get("macs"),
        "receptive_field": model.get("receptive_field"),
        "conv_layers": model.get("conv_layers"),
        "layers": model.get("layers"),
        "accuracy": f.get("accuracy"),
        "f1_macro": f.get("f1_macro"),
        "accuracy_std": f.get("accuracy_std"),
        "f1_macro_std": f.get("f1_macro_std"),
        "per_class": f.get("per_class"),
        "per_seed": f.get("per_seed"),
        "val_accuracy": f.get("val_accuracy"),
        "best_epoch": f.get("best_epoch"),
        "stopped_early": state.stopped_early if state else None,
        "epochs_completed": state.epoch if state else None,
        "images_seen": state.images_seen if state else None,
        "train_seconds": round(seconds, 3) if state else None,
        "images_per_second": round(state.images_seen / max(seconds, 1e-9), 1) if state else None,
        "device": r.device,
        "device_name": r.device_name,
        "seed": r.seed,
        "seeds": state.seeds if state else None,
        "torch_version": torch.__version__,
        "path": r.training.path if r.training else None,
        "precision": str(cfg.trainer.precision) if cfg else None,
        "threads": r.threads,
        "resumed_from": cfg.resume if cfg else None,
        "peak_rss_mb": memory.get("peak_rss_mb"),
        "peak_gpu_mb": memory.get("peak_gpu_mb"),  # CUDA only
        "mps_allocated_mb": memory.get("mps_allocated_mb"),  # MPS only
        "numerics": r.numerics,
        "validation": r.validation,
        "started_at": r.started_at,
        **{key: f.get(key) for key in measures.MEASUREMENTS},
        "measure_seconds": f.get("measure_seconds"),
        "warnings": r.warnings,
        "error": None if outcome.status == Status.completed else outcome.message,
    }


def draw_pictures(r: Results, run_dir: Path) -> list[tuple[str, Callable[[], Any]]]:
    """filters.png and feature_maps.png (from the same first test images every run) of the
    copy every picture shows, as (file name, function that draws it)."""
    model = functools.cache(lambda: r.training.copy(r.state.shown_copy()))
    filters = run_dir / "filters.png"
    maps = run_dir / "feature_maps.png"
    return [
        (filters.name, lambda: pictures.plot_filters(model(), filters, r.input_shape)),
        (maps.name, lambda: pictures.plot_feature_maps(model(), r.tensors.x_test[:4], maps)),
    ]


def run_files(r: Results, run_dir: Path) -> list[tuple[str, Callable[[], Any]]]:
    """The files that show how a run trained, as (file name, function that writes it): the
    loss curve, the confusion matrix and mistakes (with a test evaluation), the pictures."""
    cfg = r.config
    state = r.state
    steps = []
    title = pictures.run_title(cfg.model, cfg.data.name)
    rows = state.live_rows(state.history)
    if rows:
        curve = run_dir / "loss_curve.png"
        ended = (cfg.trainer.epochs, str(r.trained.status))
        steps.append((curve.name, lambda: plot_loss_curve(rows, curve, title, *ended)))
    if r.confusion is not None:
        figures, evaluations, cm = r.figures, r.evaluations, r.confusion
        steps += evaluation_files(run_dir, figures, cm, evaluations, state, r.dataset, title)
    if cfg.pictures:
        steps += draw_pictures(r, run_dir)
    return steps


def write_run(run_dir: Path, r: Results, outcome: Callable[[], Outcome]) -> tuple[dict, Outcome]:
    """Every file of the run folder that `r` has the figures for, each of which may fail
    as a warning (train.log and metrics.json's `warnings`) without costing the others; then
    metrics.json, once, with the status `outcome()` gives once they are drawn (a signal
    meanwhile may change it); then the tracker's final(), which may send the whole folder
    (so it comes after metrics.json, and a failure of it is a warning in train.log alone).
    Returns metrics.json's content and the outcome, failed if metrics.json could not be
    written (one `error:` line on stderr says so)."""
    if r.trained:
        attempt(run_files(r, run_dir))
    ended = outcome()
    metrics = metrics_record(r, ended)
    ended = write_metrics(run_dir / "metrics.json", metrics, ended)
    logger = r.config.logger.name if r.config else "none"
    attempt([(f"logger={logger} final()", lambda: r.tracker.final(metrics, run_dir))])
    return metrics, ended


def attempt(steps: list[tuple[str, Callable[[], Any]]]) -> None:
    """Each (name, step) in turn; one that fails is a `warning:` naming it."""
    for name, step in steps:
        try:
            step()
        except Exception as e:
            log.warning("warning: %s failed: %s", name, loggers.first_line(e))


def write_metrics(path: Path, metrics: dict, outcome: Outcome) -> Outcome:
    """metrics.json, and the outcome it records; if even it cannot be written (a full
    disk), one `error:` line on stderr names it, and the run failed."""
    try:
        write_json(path, metrics)
        return outcome
    except (OSError, files.WriteError) as e:
        reason = e.reason if isinstance(e, files.WriteError) else e.strerror or str(e)
        line = f"could not write {path}: {reason}"
        run = f" (the run: {outcome.message})" if outcome.message else ""
        print(f"error: {line}{run}", file=sys.stderr)
        return Outcome(Status.failed, line)
