"""Seconds per epoch of N seeds trained together (cnnlab.stack) against one model.

    python benchmarks/seeds.py --data fashion_mnist --models lenet5 --seeds 1,4,8 --epochs 3

In one process, on the same data: one model trained as cnnlab trains a seed today
(cnnlab.train.Trainer: fused Adam, channels-last for conv nets without batch norm on CPU,
a CUDA graph on CUDA), then stacks of N seeds (SeedStack.step). Epochs alternate between
them (one model epoch 1, stack 1 epoch 1, stack 4 epoch 1, ..., one model epoch 2, ...), so
a change in the machine's load hits all of them. An epoch's time is its training loop only,
evaluation excluded, measured after the device has finished. "x one" is a stack's median
epoch over the one model's; "per seed" divides that by N (below 1: cheaper than N runs).

Peak memory: on CUDA torch.cuda.max_memory_allocated during each one's epochs; on CPU the
process's peak RSS (ru_maxrss) after each one's first epoch, stacks run in increasing size,
so it is the peak so far, not each one's alone. "estimate" is cnnlab.stack.estimate_bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a source checkout

import torch  # noqa: E402

from cnnlab import data  # noqa: E402
from cnnlab.bench import machine_info, synchronize  # noqa: E402
from cnnlab.config import DataConfig, LeNetConfig, MLPConfig, TrainerConfig  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.stack import (  # noqa: E402
    SeedStack,
    data_generators,
    epoch_permutations,
    estimate_bytes,
)
from cnnlab.train import Trainer, resolve_device, seed_everything  # noqa: E402

MODELS = {
    "mlp": MLPConfig,
    "lenet5": LeNetConfig,
    "lenet5_bn": lambda: LeNetConfig(norm="batch"),
}


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class OneModel:
    """A seed as cnnlab trains it today: Trainer.fit, one more epoch per call."""

    def __init__(self, model_cfg, ds, x_train, x_test, shape, classes, cfg, device, seed):
        seed_everything(seed)
        model = build_model(model_cfg, shape, classes)
        self.cfg = cfg
        self.trainer = Trainer(model, x_train, ds.y_train, x_test, ds.y_test, cfg, device, seed)
        self.seconds: list[float] = []

    def epoch(self) -> None:
        self.cfg.epochs += 1  # fit() goes on from the epoch it reached
        result = self.trainer.fit()
        self.seconds.append(result.history[-1]["seconds"])
        self.accuracy = result.evaluation.accuracy


class Stack:
    def __init__(self, model_cfg, ds, x_train, x_test, shape, classes, cfg, device, seeds):
        self.stack = SeedStack(model_cfg, shape, classes, seeds, device, cfg, x_train, ds.y_train)
        self.generators = data_generators(seeds, device)
        self.x_test, self.y_test, self.cfg, self.device = x_test, ds.y_test, cfg, device
        self.seconds: list[float] = []

    def epoch(self) -> None:
        n, bs = len(self.stack.x_train), self.cfg.batch_size
        steps = (n + bs - 1) // bs
        synchronize(self.device)
        started = time.perf_counter()
        perms = epoch_permutations(self.generators, n, self.device)
        losses = torch.empty(steps, self.stack.n, device=self.device)
        for j in range(steps):
            losses[j] = self.stack.step(perms[:, j * bs : (j + 1) * bs])
        finite = torch.isfinite(losses).all().item()  # the host sync a real loop makes
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - started)
        evaluations = self.stack.evaluate(self.x_test, self.y_test, self.cfg.eval_batch_size)
        self.accuracy = statistics.mean(e.accuracy for e in evaluations)
        self.finite = finite


def bench_model(name, ds, data_cfg, device, seeds_list, epochs, seed) -> list[dict]:
    shape, classes = data.spec(data_cfg)
    norm = data_cfg.normalize
    x_train = data.to_device(ds.x_train, device, norm)
    x_test = data.to_device(ds.x_test, device, norm)
    model_cfg = MODELS[name]()
    runs = {
        "one model": OneModel(
            model_cfg,
            ds,
            x_train,
            x_test,
            shape,
            len(classes),
            TrainerConfig(epochs=0, progress=False, checkpoint=False),
            device,
            seed,
        )
    }
    for n in seeds_list:
        cfg = TrainerConfig(progress=False, checkpoint=False)
        runs[f"{n} seeds"] = Stack(
            model_cfg,
            ds,
            x_train,
            x_test,
            shape,
            len(classes),
            cfg,
            device,
            list(range(seed, seed + n)),
        )
    peaks = {}
    for epoch in range(epochs):
        for label, run in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            run.epoch()
            if epoch == 0 or device.type == "cuda":
                peaks[label] = max(peaks.get(label, 0.0), peak_mb(device))
    one = statistics.median(runs["one model"].seconds)
    rows = []
    for label, run in runs.items():
        n = run.stack.n if isinstance(run, Stack) else 1
        median = statistics.median(run.seconds)
        estimate = (
            estimate_bytes(model_cfg, shape, len(classes), n, TrainerConfig()) / 2**20
            if isinstance(run, Stack)
            else None
        )
        rows.append(
            {
                "model": name,
                "run": label,
                "seeds": n,
                "epoch_seconds": [round(s, 3) for s in run.seconds],
                "median_seconds": round(median, 3),
                "x_one": round(median / one, 2),
                "per_seed": round(median / one / n, 3),
                "peak_mb": round(peaks[label], 1),
                "estimate_mb": None if estimate is None else round(estimate, 1),
                "accuracy": round(run.accuracy, 4),
            }
        )
    return rows


def print_table(report: dict) -> None:
    m, s = report["machine"], report["settings"]
    print(
        f"seeds bench  {m['date']}  torch {m['torch_version']}  {m['device']} "
        f"({m['device_name']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, "
        f"load {m['load_average_1min']})"
    )
    print(
        f"data {s['data']} ({s['train_images']} train / {s['test_images']} test images), "
        f"batch 64, Adam lr 0.001, {s['epochs']} epochs, median over all of them"
    )
    print(
        f"{'model':10} {'run':10} {'s/epoch':>8} {'x one':>6} {'per seed':>8} "
        f"{'peak MB':>8} {'estimate MB':>11} {'accuracy':>8}  epochs"
    )
    for r in report["results"]:
        est = "-" if r["estimate_mb"] is None else f"{r['estimate_mb']:.1f}"
        print(
            f"{r['model']:10} {r['run']:10} {r['median_seconds']:8.3f} {r['x_one']:6.2f} "
            f"{r['per_seed']:8.3f} {r['peak_mb']:8.1f} {est:>11} {100 * r['accuracy']:7.2f}%  "
            f"{r['epoch_seconds']}"
        )


def main(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "mnist", "digits"])
    p.add_argument("--root", default=os.environ.get("CNNLAB_DATA", "data"))
    p.add_argument("--models", default="lenet5", help=f"comma-separated: {','.join(MODELS)}")
    p.add_argument("--seeds", default="1,4,8", help="stack sizes, comma-separated")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    a = p.parse_args(args)
    names = a.models.split(",")
    if unknown := [n for n in names if n not in MODELS]:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    seeds_list = [int(n) for n in a.seeds.split(",")]
    if a.epochs < 1 or min(seeds_list) < 1:
        p.error("--epochs and every --seeds value must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    kw = {"root": a.root} | ({"train_size": a.train_size} if a.train_size else {})
    data_cfg = DataConfig(a.data, **kw)
    ds = data.load(data_cfg)
    report = {
        "machine": machine_info(device),
        "settings": {
            "data": a.data,
            "train_images": len(ds.y_train),
            "test_images": len(ds.y_test),
            "epochs": a.epochs,
            "seeds": seeds_list,
        },
        "results": [
            row
            for name in names
            for row in bench_model(name, ds, data_cfg, device, sorted(seeds_list), a.epochs, a.seed)
        ],
    }
    print_table(report)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
