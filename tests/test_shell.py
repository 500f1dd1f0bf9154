"""Issue 13: what a Hydra user's hands expect. Shell completion through Hydra's own script,
`cnnlab rerun RUN [overrides]` with the command that reproduces a run in command.txt, and
`logger=mlflow` (skipped without mlflow).

Hostile input (issue 19): every value a user or an edited file can hand cnnlab that
cannot work is one `error: ` line on stderr naming the key or file, exit 2, no traceback,
and no run folder. Trackers that cannot log warn once and the run trains on."""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    CNNLAB,
    PROCESS_RUN,
    bad_input_line,
    cli_env,
    read_history,
)

from cnnlab import cli, hydra_app, shell


def learned(run: Path) -> list[tuple]:
    """What training produced, per epoch, without the wall time."""
    return [(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in read_history(run)]


# an interactive zsh driven through a pseudo-terminal: type the line and TAB, read the screen
ZSH_TAB = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; autoload -U compinit && compinit -u; autoload -U bashcompinit &&
  bashcompinit; eval "$(cnnlab train --shell-completion install=bash)"; echo READY'
wait_for() {
  local out="" chunk
  for i in {1..240}; do
    zpty -r -t z chunk && out+=$chunk
    [[ $out == *$1* ]] && { print -r -- $out; return 0 }
    sleep 0.5
  done
  print -r -- $out; return 1
}
wait_for READY >/dev/null && zpty -w -n z $'cnnlab train model=le\t' && wait_for model=lenet5
"""


@pytest.fixture(scope="module")
def original_run(tmp_path_factory, run_cli):
    cwd = tmp_path_factory.mktemp("rerun")
    run = cwd / "outputs" / "original"
    r = run_cli(cwd, "train", *PROCESS_RUN, "seed=3", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd, run


def new_run_folder(cwd: Path, original: Path) -> Path:
    (folder,) = [p.parent for p in (cwd / "outputs").rglob("metrics.json") if p.parent != original]
    return folder


def run_folder_with(tmp_path, content: bytes) -> Path:
    run = tmp_path / "old_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_bytes(content)
    return run


def test_bash_completion_through_hydras_script(tmp_path):
    """Hydra's documented install line, then a completion as bash calls it: the function
    the script registers reads COMP_LINE and friends and fills COMPREPLY."""
    script = """
        eval "$(cnnlab train --shell-completion install=bash)"
        complete -p train 2>/dev/null && echo "train registered as a command"
        complete -p cnnlab
        complete_line() {
            COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE)
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            COMPREPLY=(); hydra_bash_completion; echo "reply: ${COMPREPLY[*]}"
        }
        complete_line "cnnlab train model=le"
    """
    env = cli_env(tmp_path) | {"PATH": f"{CNNLAB.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert "train registered as a command" not in lines
    assert lines[0].endswith("hydra_bash_completion cnnlab")
    (reply,) = [line.split()[1:] for line in lines if line.startswith("reply:")]
    assert "model=lenet5" in reply and all(word.startswith("model=le") for word in reply)


@pytest.mark.parametrize("shell, separator", [("bash", " "), ("zsh", " "), ("fish", "\n")])
def test_the_command_word_completes_to_command_names(shell, separator, monkeypatch, capsys):
    monkeypatch.setenv("COMP_LINE", "cnnlab ")
    monkeypatch.setenv("COMP_POINT", "7")
    assert cli.main(["-sc", f"query={shell}"]) == 0
    names = capsys.readouterr().out.rstrip("\n").split(separator)
    assert {"train", "rerun", "compare"} <= set(names) and all(n.isidentifier() for n in names)


@pytest.mark.slow
def test_zsh_completion_through_bashcompinit(tmp_path):
    """zsh runs Hydra's bash script through bashcompinit, as Hydra's documentation says."""
    if not shutil.which("zsh"):
        pytest.skip("no zsh")
    env = cli_env(tmp_path) | {"PATH": f"{CNNLAB.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["zsh", "-f", "-c", ZSH_TAB],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0 and "cnnlab train model=lenet5" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize(
    "line, names, for_hydra",
    [
        ("cnnlab ", ["train", "rerun", "compare"], None),
        ("cnnlab re", ["rerun"], None),
        ("cnnlab train model=le", [], ("cnnlab model=le", 15)),
        ("cnnlab  train   model=le", [], ("cnnlab  model=le", 16)),
        ("cnnlab train ", [], ("cnnlab ", 7)),
        ("cnnlab rerun outputs/x", [], None),  # the folder: the shell completes file names
        ("cnnlab rerun outputs/x trainer.ep", [], ("cnnlab trainer.ep", 17)),
        ("cnnlab compare outputs", [], None),
    ],
)
def test_completion_target_takes_the_command_out_of_the_line(line, names, for_hydra):
    commands = ["train", "rerun", "compare"]
    assert shell.completion_target(line, len(line), commands) == (names, for_hydra)


def test_completion_with_a_shell_hydra_lacks_is_one_error_line(capsys):
    assert cli.main(["-sc", "query=tcsh"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bash, fish, zsh" in err


def test_merge_overrides_new_ones_win_by_key():
    old = ["model=mlp", "trainer.epochs=1", "+model.extra=1", "seed=3"]
    new = ["trainer.epochs=2", "model.extra=5", "--cfg", "job"]
    assert hydra_app.merge_overrides(old, new) == [
        "model=mlp",
        "seed=3",
        "trainer.epochs=2",
        "model.extra=5",
        "--cfg",
        "job",
    ]


def test_reproduce_command_quotes_for_the_shell():
    overrides = ["model.channels=[8,16]", "hydra.job.name=a b", "data=digits"]
    command = hydra_app.reproduce_command(overrides)
    assert shlex.split(command) == ["cnnlab", "train", *overrides]


def test_rerun_of_a_folder_without_overrides_is_one_error_line(tmp_path, capsys):
    assert cli.main(["rerun", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / ".hydra" / "overrides.yaml") in err


def test_command_txt_reproduces_the_run(original_run):
    cwd, run = original_run
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert (run / "command.txt").read_text() == hydra_app.reproduce_command(overrides) + "\n"


def test_rerun_repeats_the_run_in_a_new_folder(tmp_path, original_run, run_cli):
    cwd, run = original_run
    rerun_cwd = tmp_path  # a folder of its own, so the original's outputs/ stays as it was
    r = run_cli(rerun_cwd, "rerun", run)
    assert r.returncode == 0, r.stderr[-2000:]
    again = new_run_folder(rerun_cwd, run)
    metrics = [json.loads((f / "metrics.json").read_text()) for f in (run, again)]
    assert metrics[1]["seed"] == metrics[0]["seed"] == 3
    assert metrics[1]["accuracy"] == metrics[0]["accuracy"]
    assert learned(again) == learned(run)
    assert (again / "command.txt").read_text() == (run / "command.txt").read_text()


@pytest.mark.slow
def test_rerun_with_an_override_trains_that_way(tmp_path, original_run, run_cli):
    cwd, run = original_run
    r = run_cli(tmp_path, "rerun", run, "trainer.epochs=2")
    assert r.returncode == 0, r.stderr[-2000:]
    again = new_run_folder(tmp_path, run)
    assert json.loads((again / "metrics.json").read_text())["epochs_completed"] == 2
    assert learned(again)[0] == learned(run)[0]  # same seed: the first epoch repeats
    overrides = yaml.safe_load((again / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.epochs=2" in overrides and "trainer.epochs=1" not in overrides


@pytest.mark.parametrize(
    "content",
    [b"- model=mlp\n- data=\xff\xfe\n", b"", b"- 1\n- [a, b]\n", b"model: mlp\n", b"- [\n"],
    ids=["not utf-8", "empty", "non-strings", "a mapping", "broken yaml"],
)
def test_rerun_of_a_damaged_overrides_file(content, tmp_path, monkeypatch, capfd):
    run = run_folder_with(tmp_path, content)
    line = bad_input_line(tmp_path, monkeypatch, capfd, "rerun", str(run))
    assert "overrides.yaml" in line, line
