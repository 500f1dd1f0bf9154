"""Everything cnnlab does through Hydra: the resolvers and schemas composing needs
(`setup()`), the train command (`train_main`, and `train_once` for cnnlab.train()), the
config of every job a command runs (`command_jobs`; `composed_jobs` for inspect), Hydra's
errors as one line, and the override helpers that train and rerun share.

A train command composes its config once (HydraApp, the one adapter to Hydra's internals),
checks every job of it (check_jobs: bad input fails before anything is written), then
Hydra runs the jobs (TrainJobs); each job takes what its check found, or checks itself
where it was not known before (a joblib or submitit worker, an Optuna trial).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hydra import compose, initialize_config_dir
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import configure_log, run_job
from hydra.errors import HydraException, SearchPathException
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnlab import files
from cnnlab.checks import Checked, check_config, schema_keys
from cnnlab.config import RUN_SETTINGS, SCHEMAS, TrainConfig
from cnnlab.outcome import EXIT_CODES, CnnlabError, ConfigError, RunError, Status

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

log = logging.getLogger("cnnlab")


def config_dir() -> Path:
    """Inside the wheel the configs ship as cnnlab/configs; in a source checkout they are
    the top-level configs/ folder."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def unique_dir(path: str) -> str:
    """Claim `path` (or path-2, path-3, ...) with an atomic mkdir, so runs or sweeps started
    in the same second never share a folder."""
    candidate = path
    n = 1
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


def command_jobs(
    first: DictConfig, overrides: list[str], multirun: bool, compose_job: Callable
) -> list[DictConfig]:
    """The config of every job a command runs, from `first`, its config composed with the
    hydra node, and `compose_job(overrides)`, which composes one job. Where one run is
    meant, a value that sweeps is refused (Hydra would run its first value, or none). A
    sweeper other than Hydra's basic one (Optuna) picks its values as it goes: then only
    the fixed part is composed, and each trial is checked when it runs."""
    sweeper = first.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    # by key, the later winning in the earlier's place, as Hydra's basic sweeper reads them
    final = list({o.get_key_element(): o for o in parsed}.values())
    sweeps = [o.input_line for o in final if o.is_sweep_override()]
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
    if not multirun:
        return [first]
    if sweeper._target_ != BASIC_SWEEPER:
        return [compose_job([o.input_line for o in final if not o.is_sweep_override()])]
    return [compose_job(job) for job in sweep_jobs(final)]


def sweep_jobs(overrides: list[Override]) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper runs, in its order: every
    combination of the keys' values (BasicSweeper.split_arguments, from Hydra's public
    override API)."""
    values = []
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            values.append([f"{key}={o.get_value_element_as_str()}"])
        elif o.is_discrete_sweep():
            values.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:  # interval(0.1,1): a range of reals, for a sweeper that samples (Optuna)
            raise ConfigError(
                f"{o.input_line}: Hydra's basic sweeper runs listed values (a,b or range()), "
                f"not an interval: list the values, or sweep with hparams_search=optuna"
            )
    return [list(job) for job in itertools.product(*values)]


def composed_jobs(overrides: list[str], multirun: bool | None = None) -> list[DictConfig]:
    """The config of every job `cnnlab train` would run with these overrides, composed with
    Hydra's Compose API for commands that run none and write no run folder (inspect,
    benchmarks/claims_cost.py): multirun True for -m, False where one run is meant
    (inspect), None where the config decides (a preset that is a sweep sets hydra.mode:
    MULTIRUN, as experiment=... does)."""
    setup()
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        first = compose("train", overrides=fixed, return_hydra_config=True)
        if multirun is None:
            multirun = first.hydra.mode == RunMode.MULTIRUN
        jobs = command_jobs(
            first, overrides, multirun, lambda job: compose("train", overrides=list(job))
        )
        return [job_config(job) for job in jobs]


def job_config(cfg: DictConfig) -> DictConfig:
    """A composed config as Hydra hands it to the job: without the hydra node."""
    if "hydra" not in cfg:
        return cfg
    job = copy.deepcopy(cfg)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job


def parallel_jobs() -> int | None:
    """hydra.launcher.n_jobs when a joblib launcher runs this job: that many jobs share
    the cores (-1: one per core)."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    return launcher.get("n_jobs") if "joblib" in launcher.get("_target_", "") else None


# ---- `cnnlab train` and train(): compose once, check, run ------------------------------


def check_jobs(app: HydraApp, cfg: DictConfig) -> dict[tuple[str, ...], Checked]:
    """Every job of the command composed as its launcher will compose it, and checked,
    before any folder is made: by the job's overrides (Hydra's name for a job), what the
    check found. Raises one of BAD_INPUT."""
    multirun = cfg.hydra.mode == RunMode.MULTIRUN
    check_output_folders(cfg.hydra, multirun)
    overrides = list(cfg.hydra.overrides.task)
    jobs = command_jobs(cfg, overrides, multirun, lambda job: app.compose_job(cfg, list(job)))
    return {tuple(job.hydra.overrides.task): check_config(job_config(job)) for job in jobs}


class TrainJobs:
    """Hydra's task function for the jobs of one `cnnlab train` command: one run each.
    `checked` holds what check_jobs found for each job, by its overrides; a job that finds
    nothing there checks itself: in a joblib or submitit worker (a copy of this object,
    pickled without them) or an Optuna trial, whose values were not known before."""

    def __init__(self, checked: dict[tuple[str, ...], Checked]):
        self.checked = checked

    def __getstate__(self) -> dict:  # no meta models or checkpoints sent to other processes
        return {"checked": {}}

    def __call__(self, cfg: DictConfig) -> float:
        from cnnlab.run import Job, run_job  # torch: for a run, not for --help or a refusal

        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        job_num = hydra_cfg.job.num if multirun else None
        sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
        run_dir = Path(hydra_cfg.runtime.output_dir)
        with contextlib.suppress(OSError, RunError):  # a disk too full for it: run_job says so
            command = reproduce_command(hydra_cfg.overrides.task) + "\n"
            files.write_atomic(run_dir / "command.txt", command)
        checked = self.checked.pop(tuple(hydra_cfg.overrides.task), None)
        job = Job(job_num, sweep_dir, parallel_jobs())
        metrics, outcome = run_job(cfg, lambda: checked or check_config(cfg), run_dir, job)
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


@dataclasses.dataclass
class Trained:
    """What a train command ran: the run's folder (None where none was made) or the
    sweep's, its exit code, and for a sweep the `error:` lines of its end."""

    folder: Path | None
    exit_code: int
    errors: list[str] = dataclasses.field(default_factory=list)


def train_jobs(app: HydraApp, one_run: bool = False) -> Trained:
    """The jobs of `cnnlab train ARGS` (`app`): composed once, every job checked, then run
    by Hydra. Bad input raises one of BAD_INPUT before anything is written; `one_run`
    (train()) refuses a preset that sweeps as well."""
    cfg = app.compose()
    if one_run and cfg.hydra.mode == RunMode.MULTIRUN:
        choices = cfg.hydra.runtime.choices
        presets = [f"{g}={choices[g]}" for g in ("experiment", "hparams_search") if choices.get(g)]
        raise ConfigError(
            f"{' '.join(presets) or 'the config'} sets hydra.mode=MULTIRUN, a sweep: train() "
            f"runs one run (add hydra.mode=RUN for one run of it), cnnlab train -m a sweep"
        )
    jobs = TrainJobs(check_jobs(app, cfg))
    if cfg.hydra.mode == RunMode.MULTIRUN:
        app.multirun(cfg, jobs)
        sweep_dir = Path(cfg.hydra.sweep.dir)  # resolved as the sweep resolved it (cached)
        errors = sweep_summary(sweep_dir)
        return Trained(sweep_dir, EXIT_CODES[Status.failed] if errors else 0, errors)
    try:
        app.run(cfg, jobs)
        code = EXIT_CODES[Status.completed]
    except SystemExit as e:  # a run that did not complete: its own code (TrainJobs)
        code = e.code
    folder = OmegaConf.select(cfg, "hydra.runtime.output_dir", throw_on_missing=False)
    return Trained(Path(folder) if folder else None, code)  # None: Hydra failed to start it


def sweep_summary(sweep_dir: Path) -> list[str]:
    """At the end of a sweep: the comparison table and plots in its folder; the `error:`
    lines to print: the jobs that did not complete and, if the summary failed, why."""
    from cnnlab import compare  # pandas and seaborn: only when a sweep ends

    errors = []
    try:
        runs = compare.load_runs([sweep_dir])
        # from the job folders, before the summary: a summary that fails hides no job
        failed = compare.failed(runs)
        if failed:
            names = ", ".join(f"{r['run']} ({r['status']})" for r in failed)
            errors.append(f"{len(failed)} job(s) did not complete in {sweep_dir}: {names}")
        compare.summarize_sweep(sweep_dir, runs)
    except Exception as e:
        log.debug("sweep summary", exc_info=True)  # the trace: with hydra.verbose=cnnlab
        errors.append(f"the summary of {sweep_dir} failed: {type(e).__name__}: {e}")
    return errors


def train_main(args: list[str]) -> int:
    """`cnnlab train ARGS`: Hydra's own paths (--help, --cfg, --info, -sc) as Hydra runs
    them; else train_jobs, bad input one `error:` line and exit 2 before anything is
    written; a run that did not complete exits with its own code, a sweep with one such job
    (or whose summary failed) exits 1."""
    app = HydraApp(args)
    with app:
        if not app.runs_jobs:
            app.hydra_own(TrainJobs({}))
            return EXIT_CODES[Status.completed]
        try:
            trained = train_jobs(app)
        except BAD_INPUT as e:
            return refuse_bad_input(e)
    for error in trained.errors:
        print(f"error: {error}", file=sys.stderr)
    return trained.exit_code


def train_once(overrides: list[str]) -> tuple[Path, int]:
    """One run as `cnnlab train OVERRIDES` runs it, for the Python API (cnnlab.api): its
    folder and the exit code the shell would give. Bad input, Hydra's flags and sweeps
    raise a CnnlabError before anything is written."""
    try:
        refuse_sweeps(overrides)
        with HydraApp(overrides) as app:
            trained = train_jobs(app, one_run=True)
    except BAD_INPUT as e:
        raise cnnlab_error(e) from None
    return trained.folder, trained.exit_code


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
    lines = [f"{override}:"] if override else []
    allowed = None
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


# ---- Hydra's internals: the one adapter ------------------------------------------------

# Hydra's own sweeper: its jobs are every combination of the overrides' values (sweep_jobs)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class HydraApp:
    """`cnnlab train ARGS` as Hydra's command line runs it, ARGS given, not read from
    sys.argv. The one place cnnlab uses hydra._internal, for what Hydra 1.3 offers no
    public API for (tests/test_hydra_app.py pins each, so an upgrade that moves them fails):

    - ARGS: @hydra.main parses sys.argv itself; its parser (get_args_parser) and the runner
      of its own paths (_run_hydra: --cfg, --info, -sc) are internal.
    - One compose: @hydra.main's _run_hydra composes the whole config once only to read
      hydra.mode (Hydra.get_mode), then again to run it. Here `compose` composes it once
      (a second time only for a preset that makes it a sweep), and `run` and `multirun`
      are Hydra.run's and Hydra.multirun's steps after their compose (callbacks, run_job,
      the sweeper) on that config: between the two, cnnlab checks every job.
    - Help: Hydra's --help lists each config group's options from a new deep copy of the
      config repository (about 100, most of 3-4 s on a 2-core CPU); a config loader that
      keeps one repository per config name and overrides serves them all.

    A context manager: Hydra's global state (GlobalHydra) is cleared on the way out.
    """

    def __init__(self, args: list[str]):
        from hydra._internal.utils import get_args_parser

        self.parser = get_args_parser()
        self.args = self.parser.parse_args(args)
        self.config_name = self.args.config_name or "train"
        self.hydra = None

    def __enter__(self) -> HydraApp:
        return self

    def __exit__(self, *exc) -> None:
        GlobalHydra.instance().clear()

    @property
    def runs_jobs(self) -> bool:
        """False for Hydra's own paths (help, --cfg, --info, -sc) and its flag errors."""
        a = self.args
        own = (a.help, a.hydra_help, a.cfg, a.info, a.shell_completion, a.resolve)
        return not any(own) and not (a.run and a.multirun)

    def hydra_own(self, task) -> None:
        """Hydra's own paths as @hydra.main runs them; help from one config repository."""
        from hydra._internal.utils import _run_hydra

        setup()
        if self.args.help or self.args.hydra_help:
            show = self._start(one_repository=True).app_help
            if self.args.hydra_help:
                show = self.hydra.hydra_help
            show(config_name=self.config_name, args_parser=self.parser, args=self.args)
            return
        _run_hydra(
            args=self.args,
            args_parser=self.parser,
            task_function=task,
            config_path=str(config_dir()),
            config_name="train",
        )

    def compose(self) -> DictConfig:
        """The command's config, hydra node included, composed as Hydra composes it to run:
        once, in RUN mode unless -m, a value that sweeps (so cnnlab, not Hydra, says
        whether one run was meant) or a preset that sets hydra.mode=MULTIRUN. Raises what
        Hydra raises for bad input."""
        self._start()
        overrides = list(self.args.overrides)
        if self.args.multirun:  # as Hydra: -m makes it a sweep, whatever the config says
            return self._compose([*overrides, "hydra.mode=MULTIRUN"], RunMode.MULTIRUN)
        parsed = OverridesParser.create().parse_overrides(overrides)
        if any(o.is_sweep_override() for o in parsed):
            return self._compose(overrides, RunMode.MULTIRUN)
        cfg = self._compose(overrides, RunMode.RUN)
        if cfg.hydra.mode == RunMode.MULTIRUN:  # a preset that sweeps, composed as one
            return self._compose(overrides, RunMode.MULTIRUN)
        cfg.hydra.mode = RunMode.RUN  # as Hydra.run sets it
        return cfg

    def compose_job(self, cfg: DictConfig, overrides: list[str]) -> DictConfig:
        """One job of the sweep `cfg`, composed as Hydra's launchers compose it."""
        return self.hydra.config_loader.load_sweep_config(cfg, overrides)

    def run(self, cfg: DictConfig, task) -> None:
        """Hydra.run after its compose: the job of `cfg` (composed in RUN mode)."""
        from hydra._internal.callbacks import Callbacks
        from hydra._internal.utils import run_and_report

        def steps() -> None:
            configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
            callbacks = Callbacks(cfg)
            callbacks.on_run_start(config=cfg, config_name=self.config_name)
            ret = run_job(
                task_function=task,
                config=cfg,
                job_dir_key="hydra.run.dir",
                job_subdir_key=None,
                hydra_context=HydraContext(self.hydra.config_loader, callbacks),
            )
            callbacks.on_run_end(config=cfg, config_name=self.config_name, job_return=ret)
            _ = ret.return_value  # a job that raised: raised again, for Hydra's report

        run_and_report(steps)

    def multirun(self, cfg: DictConfig, task) -> None:
        """Hydra.multirun after its compose: the sweep of `cfg` (composed as a sweep)."""
        from hydra._internal.callbacks import Callbacks
        from hydra._internal.utils import run_and_report

        def steps() -> None:
            configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
            callbacks = Callbacks(cfg)
            callbacks.on_multirun_start(config=cfg, config_name=self.config_name)
            sweeper = Plugins.instance().instantiate_sweeper(
                config=cfg,
                hydra_context=HydraContext(self.hydra.config_loader, callbacks),
                task_function=task,
            )
            sweeper.sweep(arguments=OmegaConf.to_container(cfg.hydra.overrides.task))
            callbacks.on_multirun_end(config=cfg, config_name=self.config_name)

        run_and_report(steps)

    def _compose(self, overrides: list[str], mode: RunMode) -> DictConfig:
        return self.hydra.compose_config(self.config_name, overrides, run_mode=mode)

    def _start(self, one_repository: bool = False):
        """Hydra, as @hydra.main starts it for this module and cnnlab's configs."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_automatic_config_search_path

        class OneRepository(ConfigLoaderImpl):
            """Help only reads the config repository: one copy per name and overrides."""

            def _parse_overrides_and_create_caching_repo(self, name, overrides):
                repos = self.__dict__.setdefault("repos", {})
                key = (name, tuple(overrides))
                if key not in repos:
                    repos[key] = super()._parse_overrides_and_create_caching_repo(name, overrides)
                return repos[key]

        setup()
        search_path = create_automatic_config_search_path(
            None, __name__, self.args.config_path or str(config_dir())
        )
        if self.args.config_dir is not None:  # -cd: as _run_hydra adds it
            folder = os.path.abspath(self.args.config_dir)
            if not os.path.isdir(folder):
                raise SearchPathException(f"Additional config directory '{folder}' not found")
            search_path.prepend(
                provider="command-line",
                path=f"file://{folder}",
                anchor=SearchPathQuery(provider="schema"),
            )
        loader = (OneRepository if one_repository else ConfigLoaderImpl)(search_path)
        self.hydra = Hydra(task_name="train", config_loader=loader)
        GlobalHydra.instance().initialize(self.hydra)
        return self.hydra


def completion_script(plugin, action: str) -> None:
    """Print a completion plugin's install or uninstall script for the command `cnnlab`
    (one command, not `cnnlab train`). Hydra's plugins take the name the script registers
    from sys.argv[0] (their _get_exec), with no parameter for it: it is set for the call."""
    argv0 = sys.argv[0]
    sys.argv[0] = "cnnlab"
    try:
        getattr(plugin(None), action)()  # the config loader serves only queries
    finally:
        sys.argv[0] = argv0
