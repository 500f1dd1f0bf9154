"""What the claims ledger (`cnnlab claims --run`) costs: each claim's sweep estimated from a
few timed steps of each of its configurations, and, with --measured DIR, what a ledger run
into DIR actually took.

    CNNLAB_DATA=/path/to/root python benchmarks/claims_cost.py data.download=false \
        trainer.threads=1 --measured outputs/claims

Each configuration is composed as `cnnlab train experiment=claim_NN OVERRIDES` composes its
jobs, built with its `seeds` stacked (cnnlab.loop.start_run, as a run builds it) and trained
--steps steps on random images of its data's shape (again until --seconds have passed: the
median chunk), after two steps and an evaluation on the same state to warm up. Its
estimate is
    train  = seconds per step x ceil(train images / batch size) x epochs
    evals  = seconds per test image x (test images x (epochs + 5 S + D) + T x sample)
             (a test pass per epoch; after training, as the config's `measures` names them
             (measures.py): S, the test set at shifts 0-4; D, the dead-unit pass; T, the
             training set's sample, min(train images, measures.TRAIN_SAMPLE))
    start  = --start seconds per configuration (data loading, start-up, the run folder)
A sweep's estimate is the sum over its configurations; a claim that reads another claim's
sweep (claim 2 reads claim 1's) costs nothing more. --measured reads each sweep's
metrics.json: train_seconds + measure_seconds summed over its runs (the folder's own wall
time is in the ledger's log: `cnnlab claims --run` prints each sweep's).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a source checkout

import torch  # noqa: E402

from cnnlab import data, measures  # noqa: E402
from cnnlab.checks import check_config  # noqa: E402
from cnnlab.claims import load_claims  # noqa: E402
from cnnlab.devices import resolve_device, seed_everything  # noqa: E402
from cnnlab.engine import TrainData  # noqa: E402
from cnnlab.hydra_app import composed_jobs, config_dir  # noqa: E402
from cnnlab.loop import StopRequest, start_run, train_epoch  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.outcome import RunError  # noqa: E402
from cnnlab.threads import run_threads  # noqa: E402

EVAL_IMAGES = 2000  # the test images timed for the per-image evaluation cost


def counts(cfg, cache: dict) -> tuple[int, int]:
    """Train and test images of a data config (loaded once per data set)."""
    key = repr(cfg)  # every key: data.train_size cuts a set (claims 10 and 19) as a run does
    if key not in cache:
        ds = data.load(cfg)
        cache[key] = len(ds.y_train), len(ds.y_test)
    return cache[key]


def eval_images(taken, epochs: int, n_train: int, n_test: int) -> int:
    """The images a run evaluates: a test pass per epoch, and the measurements `taken`."""
    after = 5 * n_test * ("shift_accuracy" in taken) + n_test * ("dead_units" in taken)
    sample = min(n_train, measures.TRAIN_SAMPLE) * ("train_accuracy" in taken)
    return n_test * epochs + after + sample


def time_config(job, steps: int, cache: dict, seconds: float = 3.0) -> dict:
    checked = check_config(job)
    cfg = checked.config
    device = resolve_device(cfg.device)
    n_train, n_test = counts(cfg.data, cache)
    shape, classes = checked.input_shape, len(checked.classes)
    bs = cfg.trainer.batch_size
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))

    def build(s):
        seed_everything(s)
        return build_model(cfg.model, shape, classes)

    x = torch.randn(bs * (steps + 2), *shape, device=device)
    y = torch.randint(classes, (len(x),), device=device)
    xt = torch.randn(EVAL_IMAGES, *shape, device=device)
    yt = torch.randint(classes, (EVAL_IMAGES,), device=device)
    trainer = replace(cfg.trainer, progress=False, epochs=1)
    state, engine = start_run(build, seeds, TrainData(x, y, xt, yt), trainer, device)
    # a run's first steps and evaluation carry one-off costs (the optimizer's state, the
    # allocator): warmed up on the same state, so that they are not scaled to every step of
    # the epoch (at batch 2, 30,000 steps, they once made the estimate ten times the cost)
    train_epoch(state, engine.step, 2 * bs, trainer, StopRequest())
    engine.evaluate(xt[: 2 * bs], yt[: 2 * bs])
    # chunks of steps+2 steps until `seconds` have passed: their median per step, as a few
    # cheap steps (batch 2) timed once are swamped by one pause of a loaded machine
    chunks, spent = [], 0.0
    while spent < seconds and len(chunks) < 100 or not chunks:
        started = time.perf_counter()
        train_epoch(state, engine.step, len(x), trainer, StopRequest())
        chunks.append(time.perf_counter() - started)
        spent += chunks[-1]
    step_s = statistics.median(chunks) / (steps + 2)
    started = time.perf_counter()
    engine.evaluate(xt, yt)
    image_s = (time.perf_counter() - started) / EVAL_IMAGES
    epochs = cfg.trainer.epochs
    return {
        "seeds": cfg.seeds,
        "epochs": epochs,
        "batch": bs,
        "data": cfg.data.name,
        "train_s": step_s * math.ceil(n_train / bs) * epochs,
        "eval_s": image_s * eval_images(cfg.measures, epochs, n_train, n_test),
    }


def measured(sweep_dir: Path) -> dict | None:
    runs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    if not runs:
        return None
    done = [m for m in runs if m.get("status") == "completed"]
    return {
        "runs": len(runs),
        "completed": len(done),
        "seconds": sum(
            (m.get("train_seconds") or 0) + (m.get("measure_seconds") or 0) for m in runs
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", help="overrides for every sweep, as claims --run")
    p.add_argument("--only", metavar="N[,N]", help="these claims only")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument(
        "--seconds", type=float, default=3.0, help="time chunks of --steps this long at least"
    )
    p.add_argument("--start", type=float, default=8.0, help="seconds per configuration")
    p.add_argument("--measured", metavar="DIR", help="a ledger folder: what its sweeps took")
    a = p.parse_args()
    claims = load_claims(config_dir() / "experiment")
    if a.only:
        claims = [c for c in claims if c.number in {int(n) for n in a.only.split(",")}]
    cache, total, total_measured = {}, 0.0, 0.0
    print(f"{'claim':>5} {'sweep':9} {'configs':>7} {'epochs':>6} {'data':13} "
          f"{'estimate':>9} {'measured':>9}")  # fmt: skip
    for claim in claims:
        if not claim.tests:
            print(f"{claim.number:>5} {'-':9} {0:>7} {'-':>6} {'-':13} {'0 s':>9}  (arithmetic)")
            continue
        if claim.sweep != claim.preset:
            print(f"{claim.number:>5} {claim.sweep:9} {0:>7} {'-':>6} {'-':13} {'0 s':>9}  "
                  f"(reads {claim.sweep}'s sweep)")  # fmt: skip
            continue
        jobs = composed_jobs([f"experiment={claim.sweep}", *a.overrides])
        try:
            rows = []
            for job in jobs:
                with run_threads(job.trainer.threads):
                    rows.append(time_config(job, a.steps, cache, a.seconds))
        except RunError as e:  # its data not at hand (a UCR set offline): say so, go on
            print(f"{claim.number:>5} {claim.sweep:9} {len(jobs):>7}  not estimated: {e}")
            continue
        seconds = sum(r["train_s"] + r["eval_s"] + a.start for r in rows)
        total += seconds
        epochs = "/".join(sorted({str(r["epochs"]) for r in rows}))
        data_names = ",".join(sorted({r["data"] for r in rows}))
        seen = measured(Path(a.measured) / claim.sweep) if a.measured else None
        if seen:
            total_measured += seen["seconds"]
        shown = f"{seen['seconds']:.0f} s" if seen else "-"
        print(
            f"{claim.number:>5} {claim.sweep:9} {len(rows):>7} {epochs:>6} {data_names:13} "
            f"{seconds:>7.0f} s {shown:>9}",
            flush=True,
        )
    print(f"total: estimated {total / 60:.1f} min" + (
        f", measured so far {total_measured / 60:.1f} min (train + measure)" if a.measured else ""
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
