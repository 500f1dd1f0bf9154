"""`cnnlab rerun` and the shell completion of the whole command: both hand Hydra the
overrides of `cnnlab train` (hydra_app)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import yaml

# hydra_app (Hydra, and with the run torch) is imported where a command needs it: the CLI
# imports this module for every command, its help too


def rerun(run_folder: str, new: list[str]) -> int:
    """`cnnlab rerun RUN_FOLDER [overrides]` on the arguments cli.py split: train with
    RUN_FOLDER's overrides, `new` ones (and Hydra's flags) winning."""
    from cnnlab.hydra_app import merge_overrides, override_key, reproduce_command, train_main

    path = Path(run_folder) / ".hydra" / "overrides.yaml"
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
    overrides = merge_overrides(old, new)
    # one run, as RUN was: a preset that is a sweep (experiment=...) would run all its jobs
    if not any(a in ("-m", "--multirun") or override_key(a) == "hydra.mode" for a in new):
        overrides.append("hydra.mode=RUN")
    print(f"rerun of {run_folder}: {reproduce_command(overrides)}", flush=True)
    return train_main(overrides)


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
    from cnnlab.hydra_app import completion_plugins, completion_script, train_main

    actions = [a for a in argv if re.fullmatch(r"(install|uninstall|query)=\w+", a)]
    plugins = completion_plugins()
    action, _, shell = actions[0].partition("=") if len(actions) == 1 else ("", "", "")
    if shell not in plugins:
        print(
            f"error: {' '.join(argv)}: say one of install=SHELL, uninstall=SHELL or "
            f"query=SHELL, with SHELL one of {', '.join(sorted(plugins))}",
            file=sys.stderr,
        )
        return 2
    if action in ("install", "uninstall"):
        completion_script(plugins[shell], action)
        return 0
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT") or len(line))
    names, for_hydra = completion_target(line, point, commands)
    if for_hydra is None:
        print(("\n" if shell == "fish" else " ").join(names))
        return 0
    os.environ.update(COMP_LINE=for_hydra[0], COMP_POINT=str(for_hydra[1]))
    return train_main(["-sc", f"query={shell}"])
