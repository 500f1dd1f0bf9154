"""The `cnnlab` command: train (through Hydra), compare, bench.

`cnnlab train [overrides]` hands its arguments to Hydra untouched, so every Hydra flag
works (--help, --cfg job, -m, hydra.run.dir=...). This is the only module that knows
about Hydra: it turns the composed config into the plain dataclasses of config.py and
wires data, model, trainer and report together.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import signal
import sys
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnlab import compare, data, report
from cnnlab.config import ConfigError, TrainConfig, register_configs
from cnnlab.models import build_model, count_conv_layers, count_params, summary
from cnnlab.train import (
    CheckpointError,
    Trainer,
    device_name,
    load_checkpoint,
    resolve_device,
    seed_everything,
)

log = logging.getLogger("cnnlab")

USAGE = """usage: cnnlab COMMAND [ARGS]

commands:
  train [overrides]   train a model; Hydra overrides, e.g. model=mlp data=digits device=cuda
                      (-m for sweeps, --help for Hydra's help, --cfg job to print the config)
  compare PATH ...    compare run and sweep folders: one table, optional plots (--help)
  bench [ARGS]        time epochs: cnnlab's loop against the classic DataLoader one (--help)
  inspect [overrides] the model train would build, per layer: shape, parameters, MACs,
                      receptive field; reads no data (--format table|md|csv|json)

Exit codes: 0 ok, 1 failed, 2 bad input, 3 diverged, 130/143 interrupted.
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
register_configs()


# ---- train -------------------------------------------------------------------------------


class RunFailed(Exception):
    def __init__(self, status: str, message: str, exit_code: int):
        super().__init__(message)
        self.status, self.exit_code = status, exit_code


class Interrupted(KeyboardInterrupt):
    """Carries an interrupted run's exit code (130 SIGINT, 143 SIGTERM) out through Hydra;
    a KeyboardInterrupt, so it stops a sweep too."""

    def __init__(self, exit_code: int = 130):
        super().__init__()
        self.exit_code = exit_code


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """Hydra lets `+model.foo=1` add a key to a schema; nothing would read it, so say so."""
    for group in ("model", "data", "trainer"):
        allowed = schema_keys(OmegaConf.get_type(cfg[group]))
        extra = [key for key in cfg[group] if key not in allowed]
        if extra:
            raise ConfigError(
                f"{group}.{extra[0]} is not a key of this {group} config: allowed are "
                f"{', '.join(allowed)}"
            )


def schema_keys(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def peak_memory(device: torch.device) -> dict:
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    out = {"peak_rss_mb": round(rss_kb / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def pick_device(name: str, job_num: int | None) -> torch.device:
    # in a parallel sweep on a machine with several GPUs, spread jobs by job number
    if name == "auto" and job_num is not None and torch.cuda.device_count() > 1:
        name = f"cuda:{job_num % torch.cuda.device_count()}"
    return resolve_device(name)


def comparable_config(cfg: TrainConfig) -> dict:
    """What a checkpoint must agree on to be resumed: the model and the data."""
    d = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    for key in ("root", "download", "mirror"):
        d["data"].pop(key, None)
    return {"model": d["model"], "data": d["data"], "seed": d["seed"]}


def check_resumable(saved: dict, current: dict, path: str) -> None:
    old, new = compare.flatten(saved), compare.flatten(current)
    diff = [
        f"{k}={old.get(k)!r} (now {new.get(k)!r})"
        for k in sorted(old | new)
        if old.get(k) != new.get(k)
    ]
    if diff:
        raise ConfigError(
            f"resume={path} was trained with a different config: {', '.join(diff)}; "
            f"pass the same model, data and seed overrides as the original run"
        )


def train_run(cfg: TrainConfig, run_dir: Path, job_num: int | None = None) -> dict:
    """One training run into run_dir. Returns metrics; raises RunFailed or another error."""
    started_at = datetime.now().isoformat(timespec="seconds")
    # cuDNN may pick convolution algorithms that accumulate with atomics, and two runs of
    # the same seed then drift apart; the deterministic ones cost LeNet-5 on an H100 about
    # 0.06 s an epoch (0.25 -> 0.31 s), a price worth a seed that repeats
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
    if cfg.trainer.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    device = pick_device(cfg.device, job_num)
    input_shape, classes = data.spec(cfg.data)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, input_shape, len(classes))
    params, layers = count_params(model), summary(model)
    log.info("model %s: %s parameters | %s", cfg.model.name, f"{params:,}", layers)

    resume_state, config = None, comparable_config(cfg)
    if cfg.resume:
        resume_state = load_checkpoint(Path(cfg.resume))
        check_resumable(resume_state.get("config", {}), config, cfg.resume)

    ds = data.load(cfg.data)
    log.info(
        "data %s: %d train / %d test images of %s on %s",
        cfg.data.name,
        len(ds.y_train),
        len(ds.y_test),
        "x".join(map(str, input_shape)),
        device,
    )
    norm = cfg.data.normalize
    model.to(device)
    trainer = Trainer(
        model,
        data.to_device(ds.x_train, device, norm),
        ds.y_train.to(device),
        data.to_device(ds.x_test, device, norm),
        ds.y_test.to(device),
        cfg.trainer,
        device,
        cfg.seed,
        checkpoint_path=run_dir / "checkpoints" / "last.pt",
        extra_state={"config": config},
    )
    if resume_state is not None:
        trainer.restore(resume_state)
        log.info(
            "resumed from %s at epoch %d, step %d", cfg.resume, trainer.epoch, trainer.step_in_epoch
        )
    log.info("training path: %s, precision %s", trainer.path, cfg.trainer.precision)

    tensorboard = report.TensorBoardLogger(run_dir) if cfg.logger == "tensorboard" else None

    def on_epoch(row):
        report.write_history(run_dir / "history.csv", trainer.history)
        if tensorboard:
            tensorboard(row)

    # a signal that comes after training waits until the run folder is whole
    with trainer.catching_signals():
        try:
            result = trainer.fit(on_epoch)
        finally:
            if tensorboard:
                tensorboard.close()

        metrics = {
            "status": result.status,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "params": params,
            "conv_layers": count_conv_layers(model),
            "layers": layers,
            "accuracy": None,
            "f1_macro": None,
            "per_class": None,
            "epochs_completed": len(result.history),
            "train_seconds": round(result.train_seconds, 3),
            "images_per_second": round(result.images_seen / max(result.train_seconds, 1e-9), 1),
            "device": str(device),
            "device_name": device_name(device),
            "seed": cfg.seed,
            "torch_version": torch.__version__,
            "path": trainer.path,
            "precision": str(cfg.trainer.precision),
            "resumed_from": cfg.resume,
            "started_at": started_at,
            **peak_memory(device),
        }
        title = f"{cfg.model.name} on {cfg.data.name}"
        report.write_run(run_dir, metrics, result, ds, title)
    if result.status == "diverged":
        raise RunFailed("diverged", result.message, 3)
    if result.status == "interrupted":
        raise RunFailed("interrupted", result.message, 128 + result.signal)
    if trainer.stop_signal is not None:  # it came after the last step: honour it now
        name = signal.Signals(trainer.stop_signal).name
        raise RunFailed(
            "interrupted",
            f"{name} after the run completed; its folder is whole",
            128 + trainer.stop_signal,
        )
    log.info(
        "accuracy %.2f%%  f1_macro %.4f  -> %s",
        100 * metrics["accuracy"],
        metrics["f1_macro"],
        run_dir,
    )
    return metrics


def explain(e: BaseException, cfg: DictConfig) -> tuple[str, int]:
    """A one-line message and exit code for an error that stopped a run."""
    if isinstance(e, RunFailed):
        return str(e), e.exit_code
    if isinstance(e, ConfigError):
        return str(e), 2
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return (
            f"CUDA ran out of memory with trainer.batch_size={cfg.trainer.batch_size} and "
            f"trainer.eval_batch_size={cfg.trainer.eval_batch_size}: try smaller batches "
            f"or a smaller model"
        ), 1
    if isinstance(e, data.DataError | CheckpointError):
        return str(e), 1
    return f"{type(e).__name__}: {e}".splitlines()[0], 1


def record_failure(run_dir: Path, cfg: DictConfig, status: str, message: str) -> None:
    """metrics.json for a run that stopped before its report; keeps what was written."""
    path = run_dir / "metrics.json"
    if path.is_file():  # the run already wrote its own (diverged, interrupted)
        return
    report.write_json(
        path,
        {
            "status": status,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "error": message,
            "seed": cfg.seed,
            "torch_version": torch.__version__,
        },
    )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_command(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        refuse_unknown_keys(cfg)
        plain = OmegaConf.to_object(cfg)
        metrics = train_run(plain, run_dir, hydra_cfg.job.num if multirun else None)
        return metrics["accuracy"]  # what an Optuna sweep maximises
    except KeyboardInterrupt:
        record_failure(run_dir, cfg, "interrupted", "interrupted before training started")
        raise
    except Exception as e:
        message, code = explain(e, cfg)
        status = e.status if isinstance(e, RunFailed) else "failed"
        if not isinstance(e, RunFailed | ConfigError | data.DataError | CheckpointError):
            log.exception("run failed")  # an unexpected error: keep the traceback in train.log
        log.error("error: %s", message)
        record_failure(run_dir, cfg, status, message)
        if status == "interrupted":
            raise Interrupted(code) from None
        if multirun:
            return float("nan")  # one failed job never stops the others
        sys.exit(code)


class SweepSummary(Callback):
    """At the end of a sweep: comparison table and plots in the sweep folder."""

    failed: list[dict] = []  # read by train_main once Hydra returns
    sweep_dir: Path | None = None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        SweepSummary.sweep_dir = Path(config.hydra.sweep.dir)
        SweepSummary.failed = compare.failed(compare.summarize_sweep(SweepSummary.sweep_dir))


def train_main(args: list[str]) -> int:
    sys.argv = ["cnnlab train", *args]
    SweepSummary.failed = []
    # with HYDRA_FULL_ERROR set, Hydra raises a bad override here instead of printing it
    # over several lines; a user who set it still gets Hydra's full trace
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        train_command()
    except KeyboardInterrupt as e:  # the run has saved what it could and said so
        return getattr(e, "exit_code", 130)
    except (HydraException, OmegaConfBaseException) as e:
        if full_error == "1":
            raise
        print(f"error: {compose_error_line(e)}", file=sys.stderr)
        return 2
    finally:
        if full_error is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    if SweepSummary.failed:
        names = ", ".join(f"{r['run']} ({r['status']})" for r in SweepSummary.failed)
        print(
            f"error: {len(SweepSummary.failed)} job(s) did not complete in "
            f"{SweepSummary.sweep_dir}: {names}",
            file=sys.stderr,
        )
        return 1
    return 0


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
    a = p.parse_args(args)
    return compare.compare_command(a.paths, sort=a.sort, fmt=a.format, out=a.out)


def bench_main(args: list[str]) -> int:
    from cnnlab import bench

    return bench.main(args)


def inspect_main(args: list[str]) -> int:
    """`cnnlab inspect [overrides] [--format F]`: the model that `cnnlab train` would build
    with the same overrides, layer by layer. Trains nothing and reads no dataset file: a
    data preset knows its input shape and class count."""
    from hydra import compose, initialize_config_dir

    from cnnlab.inspection import format_inspection, inspect_model

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
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=a.overrides)
        refuse_unknown_keys(cfg)
        plain = OmegaConf.to_object(cfg)
        input_shape, classes = data.spec(plain.data)
        model = build_model(plain.model, input_shape, len(classes))
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = str(e) if isinstance(e, ConfigError) else compose_error_line(e)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_inspection(inspect_model(model, input_shape), a.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "train": train_main,
        "compare": compare_main,
        "bench": bench_main,
        "inspect": inspect_main,
    }
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(
            f"error: unknown command {argv[0]!r}: choose one of {', '.join(commands)}",
            file=sys.stderr,
        )
        return 2
    return commands[argv[0]](argv[1:])


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
