"""Shared fixtures. Every `cnnlab` process a test starts runs offline, in a folder of the
test's own, with CNNLAB_DATA pointing at an empty folder inside it: no test reads or
fills a real data folder, and none reaches the network."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# every file a completed run folder holds, as design.md lists them
RUN_FILES = [
    "metrics.json",
    "history.csv",
    "loss_curve.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "mistakes.png",
    "filters.png",
    "feature_maps.png",
    "checkpoints/last.pt",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "train.log",
]

# the console script installed beside this interpreter (pip install -e . puts it there)
CNNLAB = Path(sys.executable).with_name("cnnlab")
# a closed port on this machine: a download attempt fails at once instead of going out
NO_NETWORK = "http://127.0.0.1:9"


def cli_env(cwd: Path) -> dict:
    """The environment of a test's cnnlab process: CNNLAB_DATA = <cwd>/data (created empty)
    and every proxy variable aimed at a closed local port, so downloads fail fast."""
    data = Path(cwd) / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env.update(CNNLAB_DATA=str(data), MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = NO_NETWORK
    env.pop("HYDRA_FULL_ERROR", None)  # tests read Hydra's short messages
    return env


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(cwd, *args, timeout=300, prog=None, **env) -> CompletedProcess.

    Runs `cnnlab *args` (or `*prog, *args`) in `cwd` with cli_env(cwd) plus `env`; output
    is captured as text. A run past `timeout` seconds fails the test.
    """

    def run(cwd, *args, timeout=300, prog=None, **env):
        command = [*(prog or [str(CNNLAB)]), *map(str, args)]
        return subprocess.run(
            command,
            cwd=cwd,
            env={**cli_env(cwd), **env},
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run
