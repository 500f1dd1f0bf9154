"""The `cnnlab` command: train (through Hydra), compare, bench.

`cnnlab train [overrides]` hands its arguments to Hydra, so every Hydra flag works (--help,
--cfg job, -m, hydra.run.dir=...); it first composes and checks the config of every job, so
that bad input fails before anything is written. This is the only module that knows about
Hydra: it turns the composed config into the plain dataclasses of config.py and wires data,
model, training and report together.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import logging
import os
import re
import resource
import shlex
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

import hydra
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from torch import nn

from cnnlab import data, files, loggers, pictures, report
from cnnlab.config import (
    RESUMABLE_CHANGES,
    RUN_SETTINGS,
    ConfigError,
    TrainConfig,
    flatten,
    is_run_setting,
    register_configs,
)
from cnnlab.devices import device_name, numerics, resolve_device, seed_everything
from cnnlab.engine import TrainData, choose_path
from cnnlab.inspection import format_inspection, inspect_model
from cnnlab.loop import (
    Interrupted,
    RunState,
    StopRequest,
    fit,
    load_checkpoint,
    save_checkpoint,
    start_run,
)
from cnnlab.models import build_model, count_conv_layers, count_params, summary
from cnnlab.outcome import EXIT_CODES, CnnlabError, Outcome, RunError, Status
from cnnlab.threads import run_threads

log = logging.getLogger("cnnlab")

USAGE = """usage: cnnlab COMMAND [ARGS]

commands:
  train [overrides]   train a model; Hydra overrides, e.g. model=mlp data=digits device=cuda
                      (-m for sweeps, model.width=1,2; experiment=NAME presets sweep without
                      it; --help for Hydra's help, --cfg job to print the config)
  rerun RUN [overrides]
                      train again as RUN was trained (its .hydra/overrides.yaml), new
                      overrides winning; the new run gets a folder of its own
  compare PATH ...    compare run and sweep folders: one table, optional plots (--help)
  bench [ARGS]        time epochs: cnnlab's loop against the classic DataLoader one (--help)
  inspect [overrides] the model train would build, per layer: shape, parameters, MACs,
                      receptive field; reads no data (--format table|md|csv|json)

Shell completion (bash, zsh after `autoload -U bashcompinit && bashcompinit`):
  eval "$(cnnlab train --shell-completion install=bash)"    (fish: install=fish | source)

Exit codes: {exit_codes}.
"""


def config_dir() -> Path:
    """Inside the wheel the configs ship as cnnlab/configs; in a source checkout they are
    the top-level configs/ folder."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def unique_dir(path: str) -> str:
    """Claim `path` (or path-2, path-3, ...) with an atomic mkdir, so runs or sweeps started
    in the same second never share a folder."""
    candidate, n = path, 1
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"


# cached, so each process resolves a folder once; Hydra copies the cache into sweep jobs
OmegaConf.register_new_resolver("cnnlab.unique", unique_dir, use_cache=True, replace=True)
# a sweep job's folder is named by its overrides: a path among them (data.path=/a/b) would
# otherwise make folders inside folders
OmegaConf.register_new_resolver(
    "cnnlab.one_folder", lambda name: name.replace(os.sep, "_").replace("/", "_"), replace=True
)
# run-folder names leave out the run settings and the presets that only set up a sweep
OmegaConf.register_new_resolver(
    "cnnlab.not_in_run_names",
    lambda: [*RUN_SETTINGS, "experiment", "hparams_search"],
    replace=True,
)
register_configs()


# ---- checking a config before anything is written -------------------------------------


def schema_keys(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """Hydra lets `+model.foo=1` add a key to a schema; nothing would read it, so say so."""
    for group in ("model", "data", "trainer", "logger"):
        if not isinstance(cfg[group], DictConfig):  # ~model
            raise ConfigError(f"{group} is not set (~{group}?): a run needs one, {group}=NAME")
        allowed = schema_keys(OmegaConf.get_type(cfg[group]))
        extra = [key for key in cfg[group] if key not in allowed]
        if extra:
            raise ConfigError(
                f"{group}.{extra[0]} is not a key of this {group} config: allowed are "
                f"{', '.join(allowed)}"
            )


def resume_config(cfg: TrainConfig) -> dict:
    """What a checkpoint must agree on to be resumed: all but the run settings and what a
    resume may change."""
    tree = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    return {
        key: value
        for key, value in flatten(tree).items()
        if not is_run_setting(key) and key not in RESUMABLE_CHANGES
    }


def check_resumable(saved: dict, current: dict, path: str) -> None:
    diff = [
        f"{k}={saved.get(k)!r} (now {current.get(k)!r})"
        for k in sorted(saved | current)
        if saved.get(k) != current.get(k)
    ]
    if diff:
        raise ConfigError(
            f"resume={path} was trained with a different config: {', '.join(diff)}; pass the "
            f"same overrides as the original run (only {', '.join(RESUMABLE_CHANGES)} may change)"
        )


def check_config(cfg: DictConfig) -> TrainConfig:
    """The config as dataclasses, with every check that needs no data: ranges, the data
    source's shape, the model built on the meta device (no memory, no time), the device,
    and the checkpoint to resume. Raises a RunError with status bad_input."""
    refuse_unknown_keys(cfg)
    plain = OmegaConf.to_object(cfg)
    input_shape, classes = data.spec(plain.data)
    model = meta_model(plain.model, input_shape, len(classes))
    device = resolve_device(plain.device)
    choose_path(plain.trainer, device)
    check_fits(plain, model, input_shape, len(classes), device)
    if plain.resume:
        checkpoint = load_checkpoint(plain.resume)
        check_resumable(checkpoint.get("config", {}), resume_config(plain), plain.resume)
        check_checkpoint_tensors(checkpoint, model, plain.seeds, plain.resume)
        if checkpoint["epoch"] >= plain.trainer.epochs:  # nothing would train
            raise ConfigError(
                f"resume={plain.resume}: the run already has {checkpoint['epoch']} epochs and "
                f"trainer.epochs={plain.trainer.epochs} asks for no more: pass "
                f"trainer.epochs={checkpoint['epoch'] + 1} or more to train on"
            )
    return plain


def meta_model(cfg, input_shape: tuple, classes: int) -> nn.Module:
    """The model on the meta device: shapes only. A size torch cannot even compute (a
    width of 1e9) is bad input, not a crash."""
    try:
        with torch.device("meta"):
            return build_model(cfg, input_shape, classes)
    except RunError:
        raise
    except (RuntimeError, ValueError, OverflowError) as e:
        shape = "x".join(map(str, input_shape))
        raise ConfigError(
            f"model={cfg.name} with model.width={cfg.width} on input {shape} is too large to "
            f"build ({first_line(e)}): use a smaller model.width or fewer, smaller layers"
        ) from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_fits(cfg: TrainConfig, model: nn.Module, input_shape: tuple, classes: int, device):
    """Refuse a run that would not fit in the device's memory, before training: a stack of
    seeds by its estimated peak; one model by its weights, their gradients and one
    optimiser buffer (float32) alone, a lower bound, so no run that fits is refused."""
    from cnnlab.stack import estimate_bytes

    free = data.free_memory(device)
    if free is None:
        return
    if cfg.seeds > 1:
        need = estimate_bytes(cfg.model, input_shape, classes, cfg.seeds, cfg.trainer)
        what, remedy = f"seeds={cfg.seeds}", "use fewer seeds or a smaller trainer.batch_size"
    else:
        need = 3 * 4 * count_params(model)
        what = f"model={cfg.model.name} ({count_params(model):,} parameters)"
        remedy = "use a smaller model.width or fewer, smaller layers"
    if need > free:
        raise ConfigError(
            f"{what} needs about {need / 2**30:.1f} GiB on {device}, which has "
            f"{free / 2**30:.1f} GiB free: {remedy}"
        )


def check_checkpoint_tensors(checkpoint: dict, model: nn.Module, seeds: int, path) -> None:
    """A checkpoint whose config matches but whose tensors do not fit the model (an edited
    or foreign file) is refused here, by name and shape, not halfway into loading it. Seeds
    trained together keep each tensor with a leading copy dimension (stack.stack_models)."""
    copies = (seeds,) if seeds > 1 else ()
    expected = {k: (*copies, *v.shape) for k, v in model.state_dict().items()}
    saved = checkpoint["model"]
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        raise ConfigError(f"resume={path}: its model entry is not a dict of tensors")
    found = {k: tuple(v.shape) for k, v in saved.items()}
    wrong = [f"{k} missing" for k in expected if k not in found]
    wrong += [f"{k} unexpected" for k in found if k not in expected]
    wrong += [
        f"{k} of shape {list(found[k])} (the model's: {list(expected[k])})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    if wrong:
        raise ConfigError(
            f"resume={path}: the checkpoint's tensors do not fit the model: "
            f"{', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}"
        )


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_output_folders(hydra_cfg: DictConfig, multirun: bool) -> None:
    """Refuse a run (or sweep) folder that cannot be made, before Hydra tries to make it:
    empty (the folder cnnlab runs in would become the run folder), under a file, or in a
    folder that is not writable. Checked up to its first ${...}: the folder itself is
    claimed only as Hydra resolves it."""
    folders = OmegaConf.to_container(hydra_cfg, resolve=False)  # resolving creates them
    for kind in ("run", "sweep"):
        if not str(folders[kind]["dir"]).strip():
            raise ConfigError(f"hydra.{kind}.dir is empty: name the folder, or leave the default")
    kind = "sweep" if multirun else "run"
    text = folders[kind]["dir"]
    fixed_part = Path(re.sub(r"^\$\{cnnlab\.unique:", "", str(text)).split("${")[0] or ".")
    for folder in (fixed_part, *fixed_part.parents):
        if not folder.exists() and not folder.is_symlink():
            continue
        if not folder.is_dir():
            raise ConfigError(
                f"hydra.{kind}.dir={text}: {folder} is a file, not a folder: give a folder path"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"hydra.{kind}.dir={text}: cannot write in {folder}: give a folder path"
            )
        return


def composed_jobs(
    overrides: list[str], multirun: bool | None = None, writes: bool = True
) -> list[DictConfig]:
    """The config of every job the command will run, composed as Hydra will compose it:
    multirun True for -m, False where one run is meant (inspect), None where the config
    decides (a preset that is a sweep sets hydra.mode: MULTIRUN, as experiment=... does).
    `writes`: the command makes run folders, so they are checked too.
    A sweeper other than Hydra's basic one (Optuna) picks its values as it goes: then only
    the fixed part is composed here, and each trial is checked when it runs. Where one run
    is meant, a value that sweeps is refused: Hydra would run its first value, or none."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        first = compose("train", overrides=fixed, return_hydra_config=True)
        sweeper = first.hydra.sweeper
        if multirun is None:
            multirun = first.hydra.mode == RunMode.MULTIRUN
        if writes:
            check_output_folders(first.hydra, multirun)
        with read_write(first), open_dict(first):
            del first["hydra"]  # the job's config, as Hydra hands it to the job
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        final = {o.get_key_element(): o for o in parser.parse_overrides(params + overrides)}
        sweeps = [o.input_line for o in final.values() if o.is_sweep_override()]
        if not multirun and sweeps:
            raise ConfigError(
                f"{', '.join(sweeps)}: several values where one run is meant; give one "
                f"value, or run them all as a sweep with -m (cnnlab train -m ...)"
            )
        if not multirun or sweeper._target_ != BASIC_SWEEPER:
            return [first]
        jobs = BasicSweeper.split_arguments(list(final.values()), None)[0]
        return [compose("train", overrides=list(job)) for job in jobs]


# ---- train -------------------------------------------------------------------------------


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


def parallel_jobs() -> int | None:
    """hydra.launcher.n_jobs when a joblib launcher runs this job: that many jobs share
    the cores (-1: one per core)."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    return launcher.get("n_jobs") if "joblib" in launcher.get("_target_", "") else None


def load_tensors(cfg: TrainConfig, device: torch.device) -> tuple[data.Dataset, TrainData]:
    """The dataset as loaded (uint8, for the report) and normalised on the device."""
    ds = data.load(cfg.data)
    shape = "x".join(map(str, ds.x_train.shape[1:]))
    log.info(
        "data %s: %d train / %d test of %s on %s",
        *(cfg.data.name, len(ds.y_train), len(ds.y_test), shape, device),
    )
    norm = ds.normalize  # data.normalize, with auto worked out from the training data
    return ds, TrainData(
        data.to_device(ds.x_train, device, norm),
        ds.y_train.to(device),
        data.to_device(ds.x_test, device, norm),
        ds.y_test.to(device),
    )


def describe_model(cfg: TrainConfig, model: nn.Module, input_shape: tuple) -> dict:
    """The model's figures for metrics.json; its inspect table goes into train.log."""
    info, layers = inspect_model(model, input_shape), summary(model)
    log.info("model %s: %s parameters | %s", cfg.model.name, f"{info['params']:,}", layers)
    log.info("layers (cnnlab inspect):\n%s", format_inspection(info, "table"))
    return {
        "params": info["params"],
        "macs": info["macs"],
        "receptive_field": info["receptive_field"],
        "conv_layers": count_conv_layers(model),
        "layers": layers,
    }


def draw_pictures(engine, state: RunState, tensors: TrainData, input_shape, run_dir: Path):
    """filters.png and feature_maps.png (from the same first test images every run) of the
    copy every picture shows, as (file name, function that draws it)."""
    model = functools.cache(lambda: engine.copy(state.shown_copy()))
    filters, maps = run_dir / "filters.png", run_dir / "feature_maps.png"
    return [
        (filters.name, lambda: pictures.plot_filters(model(), filters, input_shape)),
        (maps.name, lambda: pictures.plot_feature_maps(model(), tensors.x_test[:4], maps)),
    ]


def run_metrics(
    cfg: TrainConfig, state: RunState, path: str, outcome: Outcome, device: torch.device
) -> dict:
    """metrics.json's figures about the run itself (the evaluation adds its own)."""
    return {
        "status": str(outcome.status),
        "model": cfg.model.name,
        "data": cfg.data.name,
        "accuracy": None,
        "f1_macro": None,
        "per_class": None,
        "epochs_completed": state.epoch,
        "images_seen": state.images_seen,
        "train_seconds": round(state.train_seconds, 3),
        "images_per_second": round(state.images_seen / max(state.train_seconds, 1e-9), 1),
        "device": str(device),
        "device_name": device_name(device),
        "seed": cfg.seed,
        "seeds": state.seeds,
        "torch_version": torch.__version__,
        "path": path,
        "precision": str(cfg.trainer.precision),
        "threads": torch.get_num_threads(),  # called inside run_threads: the run's count
        "resumed_from": cfg.resume,
        **peak_memory(device),
        **({"error": outcome.message} if outcome.status != Status.completed else {}),
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


def write_results(
    cfg: TrainConfig, run_dir: Path, metrics: dict, run: tuple, evaluations, run_logger
) -> None:
    """history.csv and metrics.json as soon as the figures exist; then the pictures and
    the tracker's final(), each of which may fail as a warning (train.log and metrics.json's
    `warnings`) without costing the results. `run` is (state, engine, dataset, tensors,
    input shape)."""
    state, engine, ds, tensors, input_shape = run
    title, steps = f"{cfg.model.name} on {cfg.data.name}", []
    if evaluations is not None:
        figures, cm = report.evaluation_figures(evaluations, state, ds)
        metrics |= figures
        steps += report.evaluation_files(run_dir, figures, cm, evaluations, state, ds, title)
    report.write_history(run_dir / "history.csv", state.history)
    report.write_json(run_dir / "metrics.json", metrics)
    rows = state.live_rows(state.history)
    if rows:
        curve = run_dir / "loss_curve.png"
        steps.insert(0, (curve.name, lambda: report.plot_loss_curve(rows, curve, title)))
    if cfg.pictures:
        steps += draw_pictures(engine, state, tensors, input_shape, run_dir)
    steps.append((f"logger={cfg.logger.name} final()", lambda: run_logger.final(metrics, run_dir)))
    for name, write in steps:
        try:
            write()
        except Exception as e:
            log.warning("warning: %s failed: %s", name, loggers.first_line(e))


def settle(run_dir: Path, metrics: dict, outcome: Outcome, stop: StopRequest) -> Outcome:
    """metrics.json once more, with the warnings and the status the process exits with: a
    signal noted since training ended makes a completed run interrupted (its results
    whole). A signal during this write writes it again."""
    while True:
        if outcome.status == Status.completed and stop.signal is not None:
            name = signal.Signals(stop.signal).name
            message = f"{name} after training completed; the results are whole"
            outcome = Outcome(Status.interrupted, message, stop.signal)
            log.warning(message)
        metrics["status"] = str(outcome.status)
        if outcome.status != Status.completed:
            metrics["error"] = outcome.message
        report.write_json(run_dir / "metrics.json", metrics)
        if outcome.status != Status.completed or stop.signal is None:
            return outcome


def train_run(
    cfg: TrainConfig, run_dir: Path, job_num: int | None, sweep_dir: Path | None, stop, kept
) -> tuple[dict, Outcome]:
    """One training run into run_dir (a job of the sweep in sweep_dir, if given): its
    metrics, and the outcome the process reports. `stop` is catching signals: until
    training starts one raises Interrupted; from there on it waits for the run's files.
    `kept`: the run's warnings so far (a list that grows)."""
    started_at = datetime.now().isoformat(timespec="seconds")
    device = pick_device(cfg.device, job_num)
    reset_peak_memory(device)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    ds, tensors = load_tensors(cfg, device)
    # from the data as loaded: data.spec ran in check_config; for a UCR set or an image
    # folder it reads the training file or lists every image again
    input_shape, classes = tuple(ds.x_train.shape[1:]), ds.classes
    checkpoint, config = run_dir / "checkpoints" / "last.pt", resume_config(cfg)

    def build(seed: int) -> nn.Module:  # the model `seed` alone builds
        seed_everything(seed)
        return build_model(cfg.model, input_shape, len(classes))

    def save(state: RunState) -> None:
        if cfg.trainer.checkpoint:
            save_checkpoint({**state.state_dict(), "config": config}, checkpoint)

    run_logger = loggers.open_logger(cfg, run_dir, sweep_dir)

    def on_epoch(rows: list[dict]) -> None:
        report.write_history(run_dir / "history.csv", state.history)
        run_logger(report.mean_row(state.live_rows(rows)))

    # the tracker closes last, after final(); the process's thread count comes back after
    threads = run_threads(cfg.trainer.threads, parallel_jobs())
    with numerics(cfg.trainer) as flags, threads, contextlib.closing(run_logger):
        state, engine = start_run(build, seeds, tensors, cfg.trainer, device)
        described = describe_model(cfg, engine.copy(0), input_shape)
        if cfg.resume:
            state.load_state_dict(load_checkpoint(cfg.resume), cfg.trainer.lr)
            at = (state.epoch, state.position)
            log.info("resumed from %s at epoch %d, image %d", cfg.resume, *at)
        copies = f", {len(seeds)} seeds together" if len(seeds) > 1 else ""
        log.info("training path: %s, precision %s%s", engine.path, cfg.trainer.precision, copies)
        stop.deferred = True  # from here a signal waits for the checkpoint and the files
        outcome, evaluations = fit(state, engine, tensors, cfg.trainer, stop, save, on_epoch)
        metrics = run_metrics(cfg, state, engine.path, outcome, device) | {
            **described,
            "numerics": flags,
            "started_at": started_at,
            "warnings": kept,
        }
        run = (state, engine, ds, tensors, input_shape)
        write_results(cfg, run_dir, metrics, run, evaluations, run_logger)
        outcome = settle(run_dir, metrics, outcome, stop)
    if metrics["accuracy"] is not None:
        log.info(
            "accuracy %.2f%%  f1_macro %.4f  -> %s",
            *(100 * metrics["accuracy"], metrics["f1_macro"], run_dir),
        )
    return metrics, outcome


def run_job(
    cfg: DictConfig, run_dir: Path, job_num: int | None, sweep_dir: Path | None = None
) -> tuple[dict, Outcome]:
    """train_run, and whatever stops it, a metrics.json that says how the run ended, with
    every `warning:` the run logged under `warnings`. SIGINT and SIGTERM are caught from
    here on: before training they stop the run at once, from training on they wait."""
    stop, kept = StopRequest(deferred=False), KeptWarnings()
    log.addHandler(kept)
    try:
        with stop.catching():
            try:
                return train_run(check_config(cfg), run_dir, job_num, sweep_dir, stop, kept.lines)
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
            stop.deferred = True
            return record_failure(cfg, run_dir, outcome, kept.lines)
    finally:
        log.removeHandler(kept)


def record_failure(
    cfg: DictConfig, run_dir: Path, outcome: Outcome, warnings: list[str]
) -> tuple[dict, Outcome]:
    """metrics.json of a run that did not complete. If even that small file cannot be
    written (a full disk), one `error:` line on stderr names it, and the run failed."""
    log.error("error: %s", outcome.message)
    metrics = {
        "status": str(outcome.status),
        "model": cfg.model.name,
        "data": cfg.data.name,
        "error": outcome.message,
        "seed": cfg.seed,
        "torch_version": torch.__version__,
        "warnings": warnings,
    }
    path = run_dir / "metrics.json"
    try:
        report.write_json(path, metrics)
    except (OSError, files.WriteError) as e:
        reason = e.reason if isinstance(e, files.WriteError) else e.strerror or str(e)
        line = f"could not write {path}: {reason}"
        run = "" if outcome.message.startswith(line) else f" (the run: {outcome.message})"
        print(f"error: {line}{run}", file=sys.stderr)
        outcome = Outcome(Status.failed, line)
    return metrics, outcome


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_command(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_num = hydra_cfg.job.num if multirun else None
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    run_dir = Path(hydra_cfg.runtime.output_dir)
    with contextlib.suppress(OSError, RunError):  # a disk too full for it: run_job says so
        command = reproduce_command(hydra_cfg.overrides.task) + "\n"
        files.write_atomic(run_dir / "command.txt", command)
    metrics, outcome = run_job(cfg, run_dir, job_num, sweep_dir)
    # an interrupt stops a sweep; any other job that did not complete lets the others run
    # (the sweep reports it at the end), while a single run exits with its own code
    if outcome.status == Status.interrupted or (outcome.exit_code and not multirun):
        sys.exit(outcome.exit_code)
    return metrics["accuracy"] if metrics.get("accuracy") is not None else float("nan")


class SweepSummary(Callback):
    """At the end of a sweep: comparison table and plots in the sweep folder, and for
    train_main the jobs that did not complete and, if the summary failed, why. Hydra would
    turn an exception raised here into a warning, and the sweep would exit 0."""

    failed: list[dict] = []  # read by train_main once Hydra returns
    error: str | None = None
    sweep_dir: Path | None = None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from cnnlab import compare  # pandas and seaborn: only when a sweep ends

        sweep_dir = SweepSummary.sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = compare.load_runs([sweep_dir])
            # from the job folders, before the summary: a summary that fails hides no job
            SweepSummary.failed = compare.failed(runs)
            compare.summarize_sweep(sweep_dir, runs)
        except Exception as e:
            log.debug("sweep summary", exc_info=True)  # the trace: with hydra.verbose=cnnlab
            SweepSummary.error = f"the summary of {sweep_dir} failed: {type(e).__name__}: {e}"


def train_main(args: list[str]) -> int:
    """Compose and check every job's config first: bad input is one `error:` line and exit
    2 before anything is written. Then Hydra runs the jobs; a run that does not complete
    exits with its own code from inside (train_command), a sweep with one such job (or
    whose summary failed) exits 1."""
    hydra_args = get_args_parser().parse_args(args)
    hydra_only = (hydra_args.help, hydra_args.hydra_help, hydra_args.cfg, hydra_args.info)
    if not any(hydra_only) and not hydra_args.shell_completion:
        try:
            preflight(hydra_args.overrides, hydra_args.multirun)
        except BAD_INPUT as e:
            return refuse_bad_input(e)
    sys.argv = ["cnnlab train", *args]
    SweepSummary.failed, SweepSummary.error = [], None
    train_command()
    errors = [SweepSummary.error] if SweepSummary.error else []
    if SweepSummary.failed:
        names = ", ".join(f"{r['run']} ({r['status']})" for r in SweepSummary.failed)
        errors.insert(
            0,
            f"{len(SweepSummary.failed)} job(s) did not complete in "
            f"{SweepSummary.sweep_dir}: {names}",
        )
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_CODES[Status.failed] if errors else EXIT_CODES[Status.completed]


BAD_INPUT = (HydraException, OmegaConfBaseException, RunError)


def preflight(overrides: list[str], multirun: bool) -> None:
    """Every job's config composed and checked, and the output folder: raises one of
    BAD_INPUT before anything is written."""
    for job in composed_jobs(overrides, multirun or None):
        check_config(job)


def cnnlab_error(e: BaseException) -> CnnlabError:
    """A bad-input error as its one line and the status that decides the exit code:
    bad_input for a config, failed for data that cannot be had (a RunError's status
    decides, wherever it is raised, in this check or in the run)."""
    return CnnlabError(compose_error_line(e), e.status if isinstance(e, RunError) else None)


def refuse_bad_input(e: BaseException) -> int:
    """One `error:` line on stderr and cnnlab_error's exit code. A user who set
    HYDRA_FULL_ERROR=1 gets Hydra's whole trace instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and not isinstance(e, RunError):
        raise e
    error = cnnlab_error(e)
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code


# lines of Hydra's and OmegaConf's messages that say nothing about this override
NOISE = ("object_type=", "To append to your config", "See https://", "Set the environment")


def compose_error_line(e: BaseException) -> str:
    """A compose error (and the errors behind it) on one line: the override, what is wrong
    with it, and what is allowed (a group's options, the enum's values, a schema's keys)."""
    override = getattr(e, "override", None)  # a parse error names it only here
    lines, allowed = [f"{override}:"] if override else [], None
    while e is not None:
        text = str(e).split("Config search path")[0]  # Hydra's list of its config folders
        lines += [line.strip() for line in text.splitlines()]
        schema = getattr(e, "object_type", None)  # the dataclass a misspelled key missed
        misspelled = isinstance(e, ConfigAttributeError | ConfigKeyError)
        if misspelled and dataclasses.is_dataclass(schema):
            allowed = "allowed keys: " + ", ".join(schema_keys(schema))
        e = e.__cause__
    out = []
    for line in lines:
        if not line or line.startswith(NOISE):
            continue
        if out and out[-1].endswith(":"):  # "Available options in 'model':" then one a line
            out[-1] += " " + line
        elif out and out[-1].startswith("Available options"):
            out[-1] += ", " + line
        else:
            out.append(line.rstrip("."))
    return "; ".join(out + ([allowed] if allowed else []))


def run_folder(overrides: list[str]) -> str:
    """hydra.run.dir as Hydra would resolve it for these overrides; resolving it claims
    the folder (the cnnlab.unique resolver)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        return str(compose("train", overrides, return_hydra_config=True).hydra.run.dir)


def refuse_sweeps(overrides: list[str]) -> None:
    """What would not be one run: a sweep value (a,b or range(3)) or one of Hydra's flags."""
    parser = OverridesParser.create()
    for arg in overrides:
        if not is_override(arg) or parser.parse_override(arg).is_sweep_override():
            raise ConfigError(
                f"{arg}: train() takes overrides for one run (key=value), not Hydra's flags "
                f"or a sweep: call it once per value, or sweep with cnnlab train -m"
            )


def train_once(overrides: list[str]) -> tuple[Path, int]:
    """One run as `cnnlab train OVERRIDES` runs it, for the Python API (cnnlab.api): its
    folder and the exit code the shell would give. Bad input, Hydra's flags and sweeps
    raise a CnnlabError before anything is written."""
    try:
        refuse_sweeps(overrides)
        preflight(overrides, multirun=False)
        run_dir = run_folder(overrides)
    except BAD_INPUT as e:
        raise cnnlab_error(e) from None
    quoted = run_dir.replace("'", "\\'")  # a quoted value: any path, one quote escaped
    args = merge_overrides(overrides, [f"hydra.run.dir='{quoted}'"])
    argv, sys.argv = sys.argv, ["cnnlab train", *args]
    try:
        train_command()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return Path(run_dir), code


# ---- rerun -------------------------------------------------------------------------------


def reproduce_command(overrides: list[str]) -> str:
    """The shell command that trains a run again from its task overrides (Hydra's
    .hydra/overrides.yaml), each word quoted for the shell."""
    return shlex.join(["cnnlab", "train", *overrides])


def override_key(override: str) -> str:
    """What an override sets: model.width for model.width=2, +model.width=2 or ~model.width."""
    return override.split("=", 1)[0].lstrip("+~")


def is_override(arg: str) -> bool:
    """key=value or ~key; the rest (--cfg job, -m) are Hydra's flags and their values."""
    return arg.startswith("~") or ("=" in arg and not arg.startswith("-"))


def merge_overrides(old: list[str], new: list[str]) -> list[str]:
    """old then new, an old override dropped where a new one sets the same key: Hydra
    refuses a key given twice."""
    replaced = {override_key(o) for o in new if is_override(o)}
    return [o for o in old if override_key(o) not in replaced] + list(new)


def rerun_main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: cnnlab rerun RUN_FOLDER [overrides]\n\n"
            "Train again with the overrides RUN_FOLDER was trained with (its "
            ".hydra/overrides.yaml),\nnew overrides winning; same seed, so on CPU the same "
            "metrics. The new run gets a folder\nof its own; Hydra's flags (-m, --cfg job) "
            "pass through."
        )
        return 0 if args else 2
    path = Path(args[0]) / ".hydra" / "overrides.yaml"
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = "not found" if isinstance(e, FileNotFoundError) else type(e).__name__
        print(
            f"error: {path}: {reason}; rerun takes a run folder that cnnlab train wrote",
            file=sys.stderr,
        )
        return 2
    if not isinstance(old, list) or not all(isinstance(o, str) for o in old):
        print(
            f"error: {path} is not a list of overrides (strings such as model=mlp): "
            f"rerun takes a run folder that cnnlab train wrote",
            file=sys.stderr,
        )
        return 2
    overrides = merge_overrides(old, args[1:])
    # one run, as RUN was: a preset that is a sweep (experiment=...) would run all its jobs
    if not any(a in ("-m", "--multirun") or override_key(a) == "hydra.mode" for a in args[1:]):
        overrides.append("hydra.mode=RUN")
    print(f"rerun of {args[0]}: {reproduce_command(overrides)}", flush=True)
    return train_main(overrides)


# ---- shell completion --------------------------------------------------------------------

COMPLETION_FLAGS = ("-sc", "--shell-completion")
# commands whose arguments are Hydra overrides, and how many words come before those
OVERRIDE_COMMANDS = {"train": 0, "inspect": 0, "rerun": 1}


def is_completion(argv: list[str]) -> bool:
    return any(arg in COMPLETION_FLAGS for arg in argv)


def completion_target(
    line: str, point: int, commands: list[str]
) -> tuple[list[str], tuple[str, int] | None]:
    """What to complete on the command line `line` (`cnnlab ...`), the cursor at `point`.

    While the cursor is on the command word: (the command names it may become, None).
    Where the words are Hydra overrides: ([], (line, point)) with the command word (and
    rerun's folder) taken out, as if the app were `cnnlab OVERRIDES`. Elsewhere ([], None):
    the shell falls back to file names.
    """
    before = line[:point].split()
    in_word = bool(line[:point]) and not line[:point][-1].isspace()
    if len(before) < 2 or (len(before) == 2 and in_word):
        prefix = before[1] if len(before) == 2 else ""
        return [c for c in commands if c.startswith(prefix)], None
    skip = OVERRIDE_COMMANDS.get(before[1])
    if skip is None or len(before) - 2 - in_word < skip:  # not at the overrides (yet)
        return [], None
    # take out the command and its positional arguments, each with the space after it
    words = list(re.finditer(r"\S+\s*", line))[1 : 2 + skip]
    start, end = words[0].start(), words[-1].end()
    return [], (line[:start] + line[end:], max(start, point - (end - start)))


def completion_main(argv: list[str], commands: list[str]) -> int:
    """Hydra's shell completion (`-sc` / `--shell-completion`) for the whole command.

    `install=SHELL` prints Hydra's script, registered for `cnnlab`; the script calls
    `cnnlab -sc query=SHELL` with the command line in COMP_LINE (and COMP_POINT). Here the
    first word completes to a command name, and the overrides of train, inspect and rerun
    go to Hydra's completion of the train config.
    """
    from hydra.core.plugins import Plugins
    from hydra.plugins.completion_plugin import CompletionPlugin

    actions = [a for a in argv if re.fullmatch(r"(install|uninstall|query)=\w+", a)]
    plugins = {p.provides(): p for p in Plugins.instance().discover(CompletionPlugin)}
    action, _, shell = actions[0].partition("=") if len(actions) == 1 else ("", "", "")
    if shell not in plugins:
        print(
            f"error: {' '.join(argv)}: say one of install=SHELL, uninstall=SHELL or "
            f"query=SHELL, with SHELL one of {', '.join(sorted(plugins))}",
            file=sys.stderr,
        )
        return 2
    if action in ("install", "uninstall"):
        sys.argv[0] = "cnnlab"  # the name the script registers: one command, not "cnnlab train"
        getattr(plugins[shell](None), action)()  # the config loader serves only queries
        return 0
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT") or len(line))
    names, for_hydra = completion_target(line, point, commands)
    if for_hydra is None:
        print(("\n" if shell == "fish" else " ").join(names))
        return 0
    os.environ.update(COMP_LINE=for_hydra[0], COMP_POINT=str(for_hydra[1]))
    return train_main(["-sc", f"query={shell}"])


# ---- compare and bench -------------------------------------------------------------------


def compare_main(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="cnnlab compare",
        description="One table over run folders and sweep folders (searched recursively).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep folders")
    p.add_argument("--sort", metavar="KEY", help="sort by this column; -KEY for descending")
    p.add_argument("--format", default="table", choices=["table", "csv", "md", "json"])
    p.add_argument("--out", metavar="DIR", help="also write comparison.csv/.md and the plots")
    # argparse would read `--sort -accuracy` as two options: glue the value on
    for i in range(len(args) - 1):
        if args[i] == "--sort" and args[i + 1].startswith("-"):
            args = [*args[:i], f"--sort={args[i + 1]}", *args[i + 2 :]]
            break

    def refuse(message: str):  # one `error:` line, not argparse's usage and its own line
        raise argparse.ArgumentError(None, message)

    p.error = refuse
    try:
        a = p.parse_args(args)
    except argparse.ArgumentError as e:
        print(f"error: {e}; see cnnlab compare --help", file=sys.stderr)
        return EXIT_CODES[Status.bad_input]
    from cnnlab import compare  # pandas and seaborn: not for every command

    return compare.compare_command(a.paths, sort=a.sort, fmt=a.format, out=a.out)


def bench_main(args: list[str]) -> int:
    from cnnlab import bench

    return bench.main(args)


def inspect_main(args: list[str]) -> int:
    """`cnnlab inspect [overrides] [--format F]`: the model that `cnnlab train` would build
    with the same overrides, layer by layer. Trains nothing and reads no dataset file: a
    data preset knows its input shape and class count."""
    p = argparse.ArgumentParser(
        prog="cnnlab inspect",
        description="Per layer: output shape, parameters, MACs, receptive field and jump of "
        "the model that `cnnlab train` builds with the same overrides.",
        exit_on_error=False,
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    try:
        a, unknown = p.parse_known_intermixed_args(args)  # overrides after --format too
        if unknown:
            raise argparse.ArgumentError(
                None, f"{unknown[0]} is not an option of inspect: give overrides and --format"
            )
    except argparse.ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = check_config(composed_jobs(a.overrides, multirun=False, writes=False)[0])
    except BAD_INPUT as e:
        return refuse_bad_input(e)
    input_shape, classes = data.spec(cfg.data)
    model = meta_model(cfg.model, input_shape, len(classes))  # shapes need no weights
    print(format_inspection(inspect_model(model, input_shape), a.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "train": train_main,
        "compare": compare_main,
        "bench": bench_main,
        "inspect": inspect_main,
        "rerun": rerun_main,
    }
    if is_completion(argv):
        return completion_main(argv, list(commands))
    if not argv or argv[0] in ("-h", "--help", "help"):
        codes = [
            f"{code} {status}" if status != Status.interrupted else f"{code}+signal {status}"
            for status, code in EXIT_CODES.items()
        ]
        print(USAGE.format(exit_codes=", ".join(codes)))
        return 0 if argv else 2
    if argv[0] not in commands:
        print(
            f"error: unknown command {argv[0]!r}: choose one of {', '.join(commands)}",
            file=sys.stderr,
        )
        return 2
    return commands[argv[0]](argv[1:])


def exit_now(code: int | str | None) -> None:
    """End the process as sys.exit(code) would, less the interpreter's teardown.

    After a command, Python tears down every loaded module (torch, torch._dynamo, sympy,
    matplotlib, Hydra: thousands) and torch's libraries run their destructors: about 1 s
    of a 0-epoch run on the 2-core CPU (0.35 s after a bare `import torch`), in which
    nothing is written. Everything that does write runs first: the atexit handlers
    (logging's flush and close, MLflow's, multiprocessing's), then the standard streams.
    A non-daemon thread still running gets the usual exit, which waits for it.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): the message, and 1
        print(code, file=sys.stderr)
        code = 1
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


def entry() -> None:
    """The `cnnlab` console script. A reader that closes stdout early (`cnnlab inspect |
    head`) ends the command quietly, as SIGPIPE ends other tools: 128 + SIGPIPE, no
    traceback; a run whose log lines lose their reader trains on (logging drops them)."""
    logging.raiseExceptions = False  # else each log line to a closed stdout prints a traceback
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    except BrokenPipeError:
        # Python's recommended way: later writes to stdout (the final flush) go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = Outcome(Status.interrupted, signal=signal.SIGPIPE).exit_code
    exit_now(code)


if __name__ == "__main__":
    entry()
