"""One run end to end from a plain TrainConfig that checks.check_config passed: load the
data, build the model, train, measure, and hand what the run got to, whatever stopped it,
to report.write_run, which writes the run folder. It knows nothing of Hydra: hydra_app
hands it the job's config, its folders and how many jobs share the machine."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import resource
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from cnnlab import collector, data, loggers, measures, report
from cnnlab.checkpoints import save_checkpoint
from cnnlab.checks import Checked, resume_config
from cnnlab.config import TrainConfig
from cnnlab.devices import device_name, numerics, resolve_device, seed_everything
from cnnlab.engine import TrainData
from cnnlab.inspection import format_inspection, inspect_model
from cnnlab.loop import Interrupted, RunState, StopRequest, fit, start_run
from cnnlab.models import build_model, count_conv_layers, summary
from cnnlab.outcome import Outcome, RunError, Status
from cnnlab.threads import run_threads

# the run's own logger, under the name the CLI's logging configures (train.log)
log = logging.getLogger("cnnlab")


def reset_peak_memory(device: torch.device) -> None:
    """Start this run's memory peaks from what the process holds now: Hydra's basic
    launcher runs every job of a sweep in one process, whose peaks would carry over. On
    Linux, 5 written to clear_refs resets the kernel's RSS peak (VmHWM); where that cannot
    be done the RSS peak stays the process's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    """The RSS peak since reset_peak_memory (VmHWM), else getrusage's for the process."""
    with contextlib.suppress(OSError, TypeError), open("/proc/self/status") as f:
        return int(re.search(r"^VmHWM:\s*(\d+) kB", f.read(), re.M)[1]) / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def peak_memory(device: torch.device) -> dict:
    """This run's peaks (reset_peak_memory), for metrics.json."""
    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    elif device.type == "mps":  # MPS keeps no peak: what its driver holds at the end
        out["mps_allocated_mb"] = round(torch.mps.driver_allocated_memory() / 2**20, 1)
    return out


def pick_device(name: str, job_num: int | None) -> torch.device:
    # in a parallel sweep on a machine with several GPUs, spread jobs by job number
    if name == "auto" and job_num is not None and torch.cuda.device_count() > 1:
        name = f"cuda:{job_num % torch.cuda.device_count()}"
    return resolve_device(name)


def load_tensors(cfg: TrainConfig, device: torch.device) -> tuple[data.Dataset, TrainData]:
    """The dataset as loaded (uint8, for the report) and normalised on the device."""
    ds = data.load(cfg.data)
    shape = "x".join(map(str, ds.x_train.shape[1:]))
    log.info(
        "data %s: %d train / %d test of %s on %s",
        *(cfg.data.name, len(ds.y_train), len(ds.y_test), shape, device),
    )
    validation = ds.y_val is not None
    if validation:
        log.info("validation: %d of the training images (data.val_fraction)", len(ds.y_val))
    norm = ds.normalize  # data.normalize, with auto worked out from the training data
    return ds, TrainData(
        data.to_device(ds.x_train, device, norm),
        ds.y_train.to(device),
        data.to_device(ds.x_test, device, norm),
        ds.y_test.to(device),
        data.to_device(ds.x_val, device, norm) if validation else None,
        ds.y_val.to(device) if validation else None,
    )


def describe_model(cfg: TrainConfig, model: nn.Module, input_shape: tuple) -> dict:
    """The model's figures for metrics.json; its inspect table goes into train.log."""
    info = inspect_model(model, input_shape)
    layers = summary(model)
    log.info("model %s: %s parameters | %s", cfg.model.name, f"{info['params']:,}", layers)
    log.info("layers (cnnlab inspect):\n%s", format_inspection(info, "table"))
    return {
        "params": info["params"],
        "macs": info["macs"],
        "receptive_field": info["receptive_field"],
        "conv_layers": count_conv_layers(model),
        "layers": layers,
    }


def checkpointer(cfg: TrainConfig, checkpoint: Path, config: dict) -> Callable[[RunState], None]:
    """save(state) after each epoch: checkpoints/last.pt (what a resume goes on from) and,
    when a copy's validation accuracy improved with trainer.keep=best, checkpoints/best.pt:
    the weights kept (each copy's best epoch; a stack of seeds as last.pt holds it)."""

    def save(state: RunState) -> None:
        if not cfg.trainer.checkpoint:
            return
        save_checkpoint({**state.state_dict(), "config": config}, checkpoint)
        chosen = state.selection
        if chosen is not None and chosen.weights is not None and chosen.improved_at(state.epoch):
            best = {"model": chosen.weights, "best_epoch": chosen.best_epoch}
            best |= {"val_accuracy": chosen.best_accuracy, "seeds": state.seeds, "config": config}
            save_checkpoint(best, checkpoint.parent / "best.pt")

    return save


def validation_record(cfg: TrainConfig, ds: data.Dataset) -> dict | None:
    """metrics.json's `validation`: which training images were held out, as a count and a
    digest of their indices (runs with equal digests chose on the same images)."""
    if ds.val_index is None:
        return None
    index = ds.val_index.to(torch.int64).numpy().tobytes()
    return {
        "fraction": cfg.data.val_fraction,
        "seed": cfg.data.val_seed,
        "images": len(ds.val_index),
        "indices_sha256": hashlib.sha256(index).hexdigest(),
    }


class KeptWarnings(logging.Handler):
    """Every `warning: ...` line a run logs, without the prefix: metrics.json's `warnings`."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.getMessage())
        if message.startswith("warning: "):
            self.lines.append(message.removeprefix("warning: ").splitlines()[0])


def measure(cfg: TrainConfig, run: tuple, evaluations, probe) -> tuple[list[dict], float]:
    """measures.measure's figures per copy, and the seconds they took after training; a
    failure is a warning, and no figures."""
    started = time.perf_counter()
    try:
        measured = measures.measure(
            run, evaluations, cfg.trainer.eval_batch_size, probe, cfg.measures
        )
    except Exception as e:
        log.warning("warning: measurements (shift_accuracy, ...) failed: %s", loggers.first_line(e))
        measured = [{} for _ in evaluations]
    return measured, round(time.perf_counter() - started, 3)


def train_run(checked: Checked, run_dir: Path, job: Job, stop: StopRequest, r) -> Outcome:
    """One training run into run_dir; the outcome of its training. It fills `r`
    (report.Results) as it goes, so that whatever stops it, report.write_run has what the
    run got to. `stop` is catching signals: until training starts one raises Interrupted;
    from there on it waits for the run's files."""
    r.started_at = datetime.now().isoformat(timespec="seconds")
    cfg = r.config = checked.config
    device = pick_device(cfg.device, job.num)
    r.device, r.device_name = str(device), device_name(device)
    reset_peak_memory(device)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    ds, tensors = load_tensors(cfg, device)
    r.dataset, r.tensors, r.validation = ds, tensors, validation_record(cfg, ds)
    # the shape and classes of the data as loaded
    input_shape = tuple(ds.x_train.shape[1:])
    classes = ds.classes
    r.input_shape = input_shape
    checkpoint = run_dir / "checkpoints" / "last.pt"
    config = resume_config(cfg)

    def build(seed: int) -> nn.Module:  # the model `seed` alone builds
        seed_everything(seed)
        return build_model(cfg.model, input_shape, len(classes))

    save = checkpointer(cfg, checkpoint, config)
    r.tracker = loggers.open_logger(cfg, run_dir, job.sweep_dir)

    def on_epoch(rows: list[dict]) -> None:
        report.write_history(run_dir / "history.csv", state.history)
        r.tracker(report.mean_row(state.live_rows(rows)))

    # the process's thread count and numeric flags come back after
    with numerics(cfg.trainer) as flags, run_threads(cfg.trainer.threads, job.n_jobs):
        r.numerics = flags
        state, training = start_run(build, seeds, tensors, cfg.trainer, device)
        r.state, r.training = state, training
        r.described = describe_model(cfg, training.copy(0), input_shape)
        if cfg.resume:
            # the checkpoint the check loaded: once per run; let go of it as it is applied
            resumed, checked.checkpoint = checked.checkpoint, None
            state.load_state_dict(resumed, cfg.trainer.lr)
            at = (state.epoch, state.position)
            log.info("resumed from %s at epoch %d, image %d", cfg.resume, *at)
        copies = f", {len(seeds)} seeds together" if len(seeds) > 1 else ""
        log.info("training path: %s, precision %s%s", training.path, cfg.trainer.precision, copies)
        probe = measures.probe_first_steps(state, training)  # for grad_ratio
        report.write_history(run_dir / "history.csv", state.history)  # 0 epochs: the columns
        stop.deferred = True  # from here a signal waits for the checkpoint and the files
        outcome, evaluations = fit(state, training, tensors, cfg.trainer, stop, save, on_epoch)
        r.memory, r.threads = peak_memory(device), torch.get_num_threads()
        if evaluations is not None:
            run = (state, training, ds, tensors, input_shape)
            r.measured, r.measure_seconds = measure(cfg, run, evaluations, probe)
            r.evaluations = evaluations
        r.figures, r.confusion = report.run_figures(r)
        r.trained = outcome
    return outcome


def after_training(outcome: Outcome, stop: StopRequest) -> Outcome:
    """How the run ends: a signal noted since training completed makes it interrupted (its
    results whole), so that a sweep stops and the shell hears of it."""
    if outcome.status != Status.completed or stop.signal is None:
        return outcome
    name = signal.Signals(stop.signal).name
    message = f"{name} after training completed; the results are whole"
    log.warning(message)
    return Outcome(Status.interrupted, message, stop.signal)


@dataclasses.dataclass(frozen=True)
class Job:
    """Where a run stands among others: its number and folder in a sweep (None for a
    single run), and how many jobs share the machine's cores (joblib's n_jobs, or None)."""

    num: int | None = None
    sweep_dir: Path | None = None
    n_jobs: int | None = None


def run_job(
    cfg, check: Callable[[], Checked], run_dir: Path, job: Job = Job()
) -> tuple[dict, Outcome]:
    """train_run, and whatever stops it, the run folder that says how the run ended
    (report.write_run: metrics.json, one schema for every status, with every `warning:` the
    run logged under `warnings`). SIGINT and SIGTERM are caught from here on: before
    training they stop the run at once, from training on they wait. `cfg` is the job's
    config as composed (what a failed run's record names); `check()` gives it checked
    (checks.check_config, or what hydra_app.check_jobs found): a config the check refuses
    is a run that ended with bad input, recorded like any other."""
    collector.release()  # the console script's, now that the run's modules are loaded
    stop, kept = StopRequest(deferred=False), KeptWarnings()
    r = report.Results(cfg.model.name, cfg.data.name, cfg.seed, kept.lines)
    log.addHandler(kept)
    try:
        with stop.catching():
            outcome = ended(lambda: train_run(check(), run_dir, job, stop, r), cfg, stop)
            stop.deferred = True
            metrics, outcome = report.write_run(run_dir, r, lambda: after_training(outcome, stop))
    finally:
        r.tracker.close()
        log.removeHandler(kept)
    if metrics["accuracy"] is not None:
        log.info(
            "accuracy %.2f%%  f1_macro %.4f  -> %s",
            *(100 * metrics["accuracy"], metrics["f1_macro"], run_dir),
        )
    return metrics, outcome


def ended(train: Callable[[], Outcome], cfg, stop: StopRequest) -> Outcome:
    """train()'s outcome, or the one the exception that stopped it means."""
    try:
        return train()
    except (Interrupted, KeyboardInterrupt) as e:
        stop.deferred = True
        sig = getattr(e, "signal", signal.SIGINT)
        name = signal.Signals(sig).name
        outcome = Outcome(Status.interrupted, f"{name} before training started", sig)
    except RunError as e:
        outcome = Outcome(e.status, str(e))
    except torch.cuda.OutOfMemoryError:
        outcome = Outcome(
            Status.failed,
            f"CUDA ran out of memory with trainer.batch_size={cfg.trainer.batch_size} "
            f"and trainer.eval_batch_size={cfg.trainer.eval_batch_size}: try smaller "
            f"batches or a smaller model",
        )
    except Exception as e:
        log.exception("run failed")  # an unexpected error: the traceback in train.log
        outcome = Outcome(Status.failed, loggers.first_line(e))
    log.error("error: %s", outcome.message)
    return outcome
