"""The console script's garbage collector (issue 30): held off while a command loads its
modules, frozen and back on once a run starts. Each test runs in a fresh interpreter:
gc.freeze in the test process would freeze pytest's own objects."""

import json
import sys

# a full collection (generation 2) walks every object the process holds
PROBE = """
import atexit, gc, json
full = []
gc.callbacks.append(
    lambda phase, info: phase == "start" and info["generation"] == 2
    and full.append(gc.get_freeze_count())
)
"""


def probe(run_cli, cwd, script: str) -> dict:
    proc = run_cli(cwd, "-c", PROBE + script, prog=[sys.executable])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_runs_start_up_makes_no_full_collection(tmp_path, run_cli):
    """`cnnlab train` (cli.entry): no full collection walks torch's, Hydra's and
    cnnlab's modules while they load (five did in a 0-epoch run, 0.3-0.4 s of CPU); the
    run itself has the collector on, with the modules frozen out of its scans. 4-8 s:
    a 0-epoch run in the process the console script starts, the only one that holds it."""
    script = (
        "import sys\n"
        "from cnnlab import cli\n"
        "atexit.register(lambda: print(json.dumps({'full': full, "
        "'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count()})))\n"
        "sys.argv = ['cnnlab', 'train', 'data=digits', 'trainer.epochs=0', 'device=cpu']\n"
        "cli.entry()\n"
    )
    seen = probe(run_cli, tmp_path, script)
    assert seen["enabled"]
    assert seen["frozen"] > 100_000  # torch alone: about 200,000 objects
    assert 0 not in seen["full"]  # every full collection came after the freeze


def test_release_freezes_once_and_only_what_hold_held(tmp_path, run_cli):
    """A library caller's collector is left as it is, and a sweep's later job freezes
    nothing more (a second freeze would keep the first job's garbage for ever)."""
    script = (
        "from cnnlab import collector\n"
        "collector.release()\n"  # no hold: a library caller
        "untouched = gc.isenabled() and gc.get_freeze_count() == 0\n"
        "gc.disable()\n"  # the caller's own choice
        "collector.hold(); collector.release()\n"
        "kept_off = not gc.isenabled() and gc.get_freeze_count() == 0\n"
        "gc.enable()\n"
        "collector.hold()\n"
        "held = not gc.isenabled()\n"
        "collector.release()\n"
        "frozen = gc.get_freeze_count()\n"
        "garbage = [[] for _ in range(1000)]\n"
        "collector.release()\n"  # a second job of a sweep in this process
        "print(json.dumps([untouched, kept_off, held, gc.isenabled(), frozen > 0,\n"
        "                  gc.get_freeze_count() == frozen]))\n"
    )
    assert probe(run_cli, tmp_path, script) == [True] * 6
