"""Seconds per epoch of 1, 4 and 8 seeds trained together, side by side, in one process.

    python benchmarks/seeds.py --data fashion_mnist --models lenet5 --seeds 1,4,8 --epochs 3

Each stack is what `cnnlab train seeds=N` runs: cnnlab.train.start_run with N seeds (one
seed: the plain model on cnnlab's fast path; several: the stacked copies of stack.py),
stepped by train_epoch. Epochs alternate between the stack sizes (1 seed epoch 1, 4 seeds
epoch 1, 8 seeds epoch 1, 1 seed epoch 2, ...), so a change in the machine's load hits all
of them. An epoch's time is its training loop only, evaluation excluded, measured after
the device has finished. "x one" is a stack's median epoch over one seed's; "per seed"
divides that by N (below 1: cheaper than N separate runs).

Peak memory: on CUDA torch.cuda.max_memory_allocated over each stack's epochs; on CPU the
process's peak RSS after each stack's epochs, stacks run in increasing size, so it is the
peak so far, not each one's alone. "estimate" is cnnlab.stack.estimate_bytes, the figure
`cnnlab train` checks against the free memory before it trains.
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
from cnnlab.stack import estimate_bytes  # noqa: E402
from cnnlab.train import (  # noqa: E402
    StopRequest,
    TrainData,
    resolve_device,
    seed_everything,
    start_run,
    train_epoch,
)

MODELS = {"mlp": MLPConfig, "lenet5": LeNetConfig, "lenet5_bn": lambda: LeNetConfig(norm="batch")}


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_model(name, ds, device, sizes, epochs, seed) -> list[dict]:
    shape, classes = tuple(ds.x_train.shape[1:]), len(ds.classes)
    model_cfg, cfg = MODELS[name](), TrainerConfig(epochs=epochs, progress=False)

    def build(s):
        seed_everything(s)
        return build_model(model_cfg, shape, classes)

    x_train = data.to_device(ds.x_train, device, [0.5, 0.5])
    x_test = data.to_device(ds.x_test, device, [0.5, 0.5])
    y_train, y_test = ds.y_train.to(device), ds.y_test.to(device)
    runs = {}
    for n in sizes:
        tensors = TrainData(x_train, y_train, x_test, y_test)
        runs[n] = start_run(build, list(range(seed, seed + n)), tensors, cfg, device)
    seconds, peaks, stop = {n: [] for n in sizes}, {}, StopRequest()
    for _ in range(epochs):
        for n in sizes:
            state, engine = runs[n]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            train_epoch(state, engine.step, len(x_train), cfg, stop)
            synchronize(device)
            seconds[n].append(time.perf_counter() - started)
            peaks[n] = max(peaks.get(n, 0.0), peak_mb(device))
    one = statistics.median(seconds[sizes[0]]) if sizes[0] == 1 else None
    rows = []
    for n in sizes:
        median = statistics.median(seconds[n])
        rows.append(
            {
                "model": name,
                "seeds": n,
                "path": runs[n][1].path,
                "epoch_seconds": [round(s, 4) for s in seconds[n]],
                "median_seconds": round(median, 4),
                "x_one_seed": round(median / one, 2) if one else None,
                "per_seed": round(median / one / n, 3) if one else None,
                "peak_mb": round(peaks[n], 1),
                "estimate_mb": round(estimate_bytes(model_cfg, shape, classes, n, cfg) / 2**20, 1),
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "mnist", "digits"])
    p.add_argument("--root", default=os.environ.get("CNNLAB_DATA", "data"))
    p.add_argument("--models", default="lenet5", help=f"comma-separated: {','.join(MODELS)}")
    p.add_argument("--seeds", default="1,4,8", help="stack sizes, comma-separated (1 first)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    a = p.parse_args()
    device = resolve_device(a.device)
    ds = data.load(DataConfig(name=a.data, root=a.root, train_size=a.train_size))
    sizes = [int(n) for n in a.seeds.split(",")]
    results = [
        row
        for name in a.models.split(",")
        for row in bench_model(name, ds, device, sizes, a.epochs, a.seed)
    ]
    m = machine_info(device)
    print(
        f"seeds trained together  {m['date']}  torch {m['torch_version']}  {m['device']} "
        f"({m['device_name']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, "
        f"load {m['load_average_1min']})"
    )
    print(f"data {a.data} ({len(ds.y_train)} train images), batch 64, Adam, {a.epochs} epochs")
    print(f"{'model':10} {'seeds':>5} {'s/epoch':>9} {'x one':>7} {'per seed':>9} "
          f"{'peak MB':>9} {'estimate MB':>12}  path")  # fmt: skip
    for r in results:
        print(
            f"{r['model']:10} {r['seeds']:>5} {r['median_seconds']:>9} {r['x_one_seed'] or '-':>7} "
            f"{r['per_seed'] or '-':>9} {r['peak_mb']:>9} {r['estimate_mb']:>12}  {r['path']}"
        )
    print("s/epoch: median over the epochs of the training loop alone; x one: over one seed's")
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": m, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
