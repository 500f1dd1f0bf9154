"""Everything cnnlab does through Hydra: the resolvers and schemas composing needs
(`setup()`), composing every job of a command as Hydra will (`composed_jobs`), the
`@hydra.main` train entry and its sweep summary, Hydra's errors as one line, and the
override helpers that train and rerun share.

`cnnlab train` composes and checks every job first (bad input fails before anything is
written); the checked config then travels to the job in this process (`CHECKED`), so a job
checks again only where it runs elsewhere (a joblib or submitit worker) or was not known
before (an Optuna trial).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shlex
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnlab import files
from cnnlab.checks import Checked, check_config, schema_keys
from cnnlab.config import RUN_SETTINGS, SCHEMAS, TrainConfig
from cnnlab.outcome import EXIT_CODES, CnnlabError, ConfigError, RunError, Status

log = logging.getLogger("cnnlab")


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


@functools.cache
def setup() -> None:
    """Register what composing train.yaml needs: cnnlab's resolvers with OmegaConf and the
    schemas (the YAML files name them as /<name>_schema in their defaults lists) in
    Hydra's ConfigStore. The entry points call it; once per process."""
    # cached, so each process resolves a folder once; Hydra copies the cache into sweep jobs
    OmegaConf.register_new_resolver("cnnlab.unique", unique_dir, use_cache=True, replace=True)
    # a sweep job's folder is named by its overrides: a path among them (data.path=/a/b)
    # would otherwise make folders inside folders
    OmegaConf.register_new_resolver(
        "cnnlab.one_folder", lambda name: name.replace(os.sep, "_").replace("/", "_"), replace=True
    )
    # run-folder names leave out the run settings and the presets that only set up a sweep
    OmegaConf.register_new_resolver(
        "cnnlab.not_in_run_names",
        lambda: [*RUN_SETTINGS, "experiment", "hparams_search"],
        replace=True,
    )
    cs = ConfigStore.instance()
    # at the root, as train_schema: a group of their own would be offered by `model=` and
    # listed among the config groups of `cnnlab train --help`
    for name, node in {"train": TrainConfig, **SCHEMAS}.items():
        cs.store(name=f"{name}_schema", node=node)


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
    """The config of every job the command will run (compose_jobs)."""
    return compose_jobs(overrides, multirun, writes)[1]


def compose_jobs(
    overrides: list[str], multirun: bool | None = None, writes: bool = True
) -> tuple[RunMode | None, list[DictConfig]]:
    """hydra.mode as the config sets it (None: Hydra's default), and the config of every job
    the command will run, composed as Hydra will compose it: multirun True for -m, False
    where one run is meant (inspect), None where the config decides (a preset that is a
    sweep sets hydra.mode: MULTIRUN, as experiment=... does).
    `writes`: the command makes run folders, so they are checked too.
    A sweeper other than Hydra's basic one (Optuna) picks its values as it goes: then only
    the fixed part is composed here, and each trial is checked when it runs. Where one run
    is meant, a value that sweeps is refused: Hydra would run its first value, or none."""
    setup()
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        first = compose("train", overrides=fixed, return_hydra_config=True)
        sweeper, mode = first.hydra.sweeper, first.hydra.mode
        if multirun is None:
            multirun = mode == RunMode.MULTIRUN
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
        if multirun and "optuna" in sweeper._target_.lower() and not first.data.val_fraction:
            raise ConfigError(
                "hparams_search=optuna chooses on validation accuracy, and data.val_fraction=0 "
                "holds no validation images out: set data.val_fraction (the preset's is 0.1)"
            )
        if not multirun or sweeper._target_ != BASIC_SWEEPER:
            return mode, [first]
        jobs = BasicSweeper.split_arguments(list(final.values()), None)[0]
        return mode, [compose("train", overrides=list(job)) for job in jobs]


@contextlib.contextmanager
def known_mode(mode: RunMode | None):
    """Hydra composes the whole config once more before a run only to read hydra.mode
    (Hydra.get_mode, about 70 ms); the pre-flight composed it already, so Hydra is told."""
    from hydra._internal.hydra import Hydra

    original = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: mode
    try:
        yield
    finally:
        Hydra.get_mode = original


def one_repository():
    """Hydra's --help lists each config group's options from a new deep copy of the whole
    config repository: about 100 copies, most of `cnnlab train --help`'s 3-4 s on the 2-core
    CPU. Help only reads them: one copy per config name and overrides serves every group."""
    from unittest import mock

    from hydra._internal.config_loader_impl import ConfigLoaderImpl as Loader

    original = Loader._parse_overrides_and_create_caching_repo
    once = functools.cache(lambda self, name, overrides: original(self, name, list(overrides)))
    return mock.patch.object(  # Hydra passes a list: a tuple is the cache's key
        Loader, original.__name__, lambda self, name, over: once(self, name, tuple(over))
    )


def parallel_jobs() -> int | None:
    """hydra.launcher.n_jobs when a joblib launcher runs this job: that many jobs share
    the cores (-1: one per core)."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    return launcher.get("n_jobs") if "joblib" in launcher.get("_target_", "") else None


# train_main's pre-flight: each job's checked config, by job_key of its composed config;
# its job (in this process) takes it from here instead of checking again
CHECKED: dict[str, Checked] = {}


def job_key(cfg: DictConfig) -> str:
    """A job's config as composed, unresolved: the same text in train_main's pre-flight and
    in the job Hydra starts (resolving would claim run folders)."""
    return OmegaConf.to_yaml(cfg)


def checked_job(cfg: DictConfig) -> Checked:
    """The job's config as the pre-flight checked it, else checked now: in a worker process
    (joblib, submitit) or an Optuna trial, whose values the pre-flight could not know."""
    found = CHECKED.pop(job_key(cfg), None)
    return found if found is not None else check_config(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_command(cfg: DictConfig) -> float:
    from cnnlab.run import Job, run_job  # torch: for a run, not for --help or a refusal

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_num = hydra_cfg.job.num if multirun else None
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    run_dir = Path(hydra_cfg.runtime.output_dir)
    with contextlib.suppress(OSError, RunError):  # a disk too full for it: run_job says so
        command = reproduce_command(hydra_cfg.overrides.task) + "\n"
        files.write_atomic(run_dir / "command.txt", command)
    job = Job(job_num, sweep_dir, parallel_jobs())
    metrics, outcome = run_job(cfg, lambda: checked_job(cfg), run_dir, job)
    # an interrupt stops a sweep; any other job that did not complete lets the others run
    # (the sweep reports it at the end), while a single run exits with its own code
    if outcome.status == Status.interrupted or (outcome.exit_code and not multirun):
        sys.exit(outcome.exit_code)
    return objective(metrics)


def objective(metrics: dict) -> float:
    """What a sweeper that optimises (Optuna) maximises: the validation accuracy where the
    run held a split out, else the test accuracy; NaN for a run that has neither."""
    for key in ("val_accuracy", "accuracy"):
        if metrics.get(key) is not None:
            return metrics[key]
    return float("nan")


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
    # Hydra's own paths (--help, --cfg, -sc) as they are, help from one config repository
    mode = one_repository() if any(hydra_only[:2]) else contextlib.nullcontext()
    if not any(hydra_only) and not hydra_args.shell_completion:
        try:
            mode = preflight(hydra_args.overrides, hydra_args.multirun or None)
        except BAD_INPUT as e:
            return refuse_bad_input(e)
    run_hydra(args, mode)
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


def preflight(overrides: list[str], multirun: bool | None):
    """Every job's config composed and checked (kept in CHECKED for its job); raises one
    of BAD_INPUT before anything is written. Returns what answers Hydra's mode question."""
    try:
        found, jobs = compose_jobs(overrides, multirun)
        for job in jobs:
            CHECKED[job_key(job)] = check_config(job)
    except BaseException:
        CHECKED.clear()
        raise
    return known_mode(found)


def run_hydra(args: list[str], mode) -> None:
    """Hydra runs the jobs of `cnnlab train ARGS`."""
    setup()
    sys.argv = ["cnnlab train", *args]
    SweepSummary.failed, SweepSummary.error = [], None
    try:
        with mode:
            train_command()
    finally:
        CHECKED.clear()  # an Optuna sweep's fixed part, or what a job that did not run left


def train_once(overrides: list[str]) -> tuple[Path, int]:
    """One run as `cnnlab train OVERRIDES` runs it, for the Python API (cnnlab.api): its
    folder and the exit code the shell would give. Bad input, Hydra's flags and sweeps
    raise a CnnlabError before anything is written."""
    try:
        refuse_sweeps(overrides)
        mode = preflight(overrides, multirun=False)
        run_dir = run_folder(overrides)
    except BAD_INPUT as e:
        CHECKED.clear()
        raise cnnlab_error(e) from None
    quoted = run_dir.replace("'", "\\'")  # a quoted value: any path, one quote escaped
    argv = sys.argv
    try:
        run_hydra(merge_overrides(overrides, [f"hydra.run.dir='{quoted}'"]), mode)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return Path(run_dir), code


def run_folder(overrides: list[str]) -> str:
    """hydra.run.dir as Hydra would resolve it for these overrides; resolving it claims
    the folder (the cnnlab.unique resolver)."""
    setup()
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


BAD_INPUT = (HydraException, OmegaConfBaseException, RunError)


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
    return "; ".join(out + ([allowed] if allowed else []) + _quoting_hint(override))


def _quoting_hint(override) -> list[str]:
    """baseline=model.width=1: Hydra reads the second `=` as a syntax error; quoted, the
    value is one string."""
    key, _, value = str(override or "").partition("=")
    if "=" not in value or value[:1] in "'\"":
        return []
    return [f"quote a value that holds '=': '{key}=\"{value}\"'"]


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


def completion_plugins() -> dict:
    """Hydra's shell-completion plugins by the shell each serves (bash, zsh, fish)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.completion_plugin import CompletionPlugin

    return {p.provides(): p for p in Plugins.instance().discover(CompletionPlugin)}
