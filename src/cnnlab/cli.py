"""The `cnnlab` command: routes `cnnlab train | inspect | rerun | compare | bench | claims`
and parses their arguments, nothing else. Hydra lives in hydra_app (train composes each
job's config once there and checks every job before the first starts, so bad input fails
before anything is written), the check in checks, one run in run, rerun and shell
completion in shell.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sys
import threading

# Hydra, torch and pandas are imported by the commands that use them, not here: help, a
# mistyped command and argparse's refusals answer in a blink (issue 30)
from cnnlab import collector, threads
from cnnlab.outcome import EXIT_CODES, Outcome, Status
from cnnlab.shell import completion_main, is_completion, rerun

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
                      receptive field; reads no data for built-in sets (UCR files and
                      image folders for their shape) (--format table|md|csv|json)
  claims [overrides]  the chapter's claims judged on their sweeps in --dir (outputs/claims;
                      --run runs the missing ones): writes claims.md (--help)

Shell completion (bash, zsh after `autoload -U bashcompinit && bashcompinit`):
  eval "$(cnnlab train --shell-completion install=bash)"    (fish: install=fish | source)

Exit codes: {exit_codes}.
"""


# ---- the commands ------------------------------------------------------------------------


def train_main(args: list[str]) -> int:
    from cnnlab import hydra_app

    return hydra_app.train_main(args)


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
    run_folder, *overrides = args
    return rerun(run_folder, overrides)


def compare_main(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="cnnlab compare",
        description="One table over run folders and sweep folders (searched recursively).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep folders")
    p.add_argument("--sort", metavar="KEY", help="sort by this column; -KEY for descending")
    p.add_argument("--format", default="table", choices=["table", "csv", "md", "json"])
    p.add_argument("--out", metavar="DIR", help="also write comparison.csv/.md and the plots")
    p.add_argument(
        "--wide", action="store_true", help="every column (the table: at most 120 columns wide)"
    )
    p.add_argument(
        "--baseline",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="the row the others are compared with: diff, simultaneous 95%% CI, p, verdict",
    )
    p.add_argument(
        "--metric",
        default="accuracy",
        metavar="NAME",
        help="the per-seed figure of metrics.json judged (dotted: shift_accuracy.2)",
    )
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

    return compare.compare_command(
        a.paths, a.sort, a.format, a.out, a.baseline, metric=a.metric, wide=a.wide
    )


def bench_main(args: list[str]) -> int:
    from cnnlab import bench  # torch: its help shows the data sets it can load

    p = argparse.ArgumentParser(
        prog="cnnlab bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--data", default="fashion_mnist", choices=bench.DATA_NAMES)
    p.add_argument(
        "--root",
        default=os.environ.get("CNNLAB_DATA", "data"),
        help="data folder (default: $CNNLAB_DATA, else data/)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--models", default="mlp,lenet5", help="comma-separated: mlp,lenet5")
    p.add_argument("--skip-classic", action="store_true", help="time cnnlab's loop only")
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    a = p.parse_args(args)
    names = a.models.split(",")
    if unknown := [n for n in names if n not in bench.MODELS]:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(bench.MODELS)}")
    if a.epochs < 1:
        p.error("--epochs must be at least 1")
    collector.release()  # epochs timed with the collector a run has
    return bench.main(
        device=a.device,
        data_name=a.data,
        root=a.root,
        epochs=a.epochs,
        model_names=names,
        classic=not a.skip_classic,
        train_size=a.train_size,
        threads=a.threads,
        seed=a.seed,
        out=a.out,
    )


def parse_overrides_and_options(p: argparse.ArgumentParser, args: list[str], unknown_says: str):
    """The namespace of a command that takes overrides and options in any order (an option
    after an override too), or None after one `error:` line for an argument it refuses,
    an unknown option named with `unknown_says`. `p` is built with exit_on_error=False."""
    try:
        a, unknown = p.parse_known_intermixed_args(args)
        if unknown:
            raise argparse.ArgumentError(None, f"{unknown[0]} {unknown_says}")
    except argparse.ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    return a


def claim_numbers(text: str) -> set[int]:
    """--only's value: comma-separated claim numbers."""
    try:
        return {int(n) for n in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: claim numbers, e.g. 1,2,5") from None


def claims_main(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="cnnlab claims",
        description="The chapter's claims (configs/experiment/claim_*.yaml) judged on the "
        "sweeps in DIR: writes DIR/claims.md.",
        exit_on_error=False,
    )
    p.add_argument("overrides", nargs="*", help="overrides for the sweeps --run runs")
    p.add_argument("--dir", default="outputs/claims", help="one sweep folder per preset")
    p.add_argument("--run", action="store_true", help="run the sweeps not yet in DIR")
    p.add_argument(
        "--only", metavar="N[,N]", type=claim_numbers, help="these claims only, e.g. 1,2,5"
    )
    a = parse_overrides_and_options(p, args, "is not an option of claims")
    if a is None:
        return EXIT_CODES[Status.bad_input]
    from cnnlab import claims
    from cnnlab.hydra_app import config_dir

    return claims.main(config_dir() / "experiment", a.dir, a.overrides, run=a.run, only=a.only)


def inspect_main(args: list[str]) -> int:
    """`cnnlab inspect [overrides] [--format F]`: the model that `cnnlab train` would build
    with the same overrides, layer by layer. Trains nothing; a built-in data preset knows its
    input shape and class count, a UCR set or an image folder is read for them."""
    p = argparse.ArgumentParser(
        prog="cnnlab inspect",
        description="Per layer: output shape, parameters, MACs, receptive field and jump of "
        "the model that `cnnlab train` builds with the same overrides.",
        exit_on_error=False,
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    a = parse_overrides_and_options(
        p, args, "is not an option of inspect: give overrides and --format"
    )
    if a is None:
        return EXIT_CODES[Status.bad_input]
    from cnnlab.checks import check_config
    from cnnlab.hydra_app import BAD_INPUT, composed_jobs, refuse_bad_input

    try:
        job = composed_jobs(a.overrides, multirun=False)[0]
        checked = check_config(job, run=False)  # no data: inspect needs no dataset files
    except BAD_INPUT as e:
        return refuse_bad_input(e)
    from cnnlab.inspection import format_inspection, inspect_model

    # the check built the model on the meta device: shapes need no weights
    print(format_inspection(inspect_model(checked.model, checked.input_shape), a.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    # trainer.threads=auto measures other processes' use of the cores from here: over the
    # command's start-up, so that a run need not wait to measure it
    threads.mark_start()
    if argv is None:
        _, *argv = sys.argv  # the program's name, then the command's arguments
    argv = list(argv)
    commands = {
        "train": train_main,
        "compare": compare_main,
        "bench": bench_main,
        "inspect": inspect_main,
        "rerun": rerun_main,
        "claims": claims_main,
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
    collector.hold()  # until a run has loaded its modules (collector.release)
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
