"""Seconds per epoch of 1, 4 and 8 seeds trained together, side by side, in one process.

    python benchmarks/seeds.py --data fashion_mnist --models lenet5 --seeds 1,4,8 --epochs 3

Each stack is what `cnnlab train seeds=N` runs: cnnlab.loop.start_run with N seeds (one
seed: the plain model on cnnlab's fast path; several: the stacked copies of stack.py),
stepped by train_epoch. Epochs alternate between the stack sizes (1 seed epoch 1, 4 seeds
epoch 1, 8 seeds epoch 1, 1 seed epoch 2, ...), so a change in the machine's load hits all
of them. An epoch's time is its training loop only, evaluation excluded, measured after
the device has finished. "x one" is a stack's median epoch over one seed's; "per seed"
divides that by N (below 1: cheaper than N separate runs).

With --vmap, each stack of several seeds is also trained as torch.func's
vmap(functional_call) over the same copies (one fused Adam, the same batches): the
alternative stack.py's grouped layers were measured against.

Peak memory: on CUDA torch.cuda.max_memory_allocated over each stack's epochs; on CPU, where
a process's peak RSS only grows, each stack size trains again in a fresh process of its own
(random data of the same shape, 30 steps), and the peak RSS it reaches above the RSS it had
with the data alone is shown (library start-up included). "estimate" is
cnnlab.stack.estimate_bytes, the figure `cnnlab train` checks against the free memory
before it trains.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a source checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cnnlab import data  # noqa: E402
from cnnlab.bench import machine_info, synchronize  # noqa: E402
from cnnlab.config import DataConfig, LeNetConfig, MLPConfig, TrainerConfig  # noqa: E402
from cnnlab.devices import resolve_device, seed_everything  # noqa: E402
from cnnlab.engine import TrainData, make_optimizer  # noqa: E402
from cnnlab.loop import RunState, StopRequest, start_run, train_epoch  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.stack import estimate_bytes  # noqa: E402

MODELS = {"mlp": MLPConfig, "lenet5": LeNetConfig, "lenet5_bn": lambda: LeNetConfig(norm="batch")}


def rss_peak_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry a parent's peak over)."""
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) / 1024


def vmap_run(build, seeds: list[int], tensors: TrainData, cfg: TrainerConfig, device):
    """The copies under vmap(functional_call): a run state and step for train_epoch."""
    from torch.func import functional_call, stack_module_state, vmap

    models = [build(s).to(device) for s in seeds]
    params, buffers = stack_module_state(models)
    weights = torch.nn.ParameterList(params.values())
    optimizer = make_optimizer(weights, cfg, device, graph=False)
    template = models[0].to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

    losses = vmap(loss)

    def step(idx: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        out = losses(params, buffers, tensors.x_train[idx], tensors.y_train[idx])
        out.sum().backward()
        optimizer.step()
        return out.detach()

    rngs = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    return RunState(weights, optimizer, list(seeds), rngs), step


def probe_rss(name: str, n: int, shape: tuple, classes: int, test_images: int) -> float:
    """CPU: the peak RSS in MB of n seeds training 30 steps and evaluating once, in a
    fresh process, above that process's RSS with the data alone."""
    spec = ":".join(map(str, (name, n, classes, test_images, ",".join(map(str, shape)))))
    command = [sys.executable, __file__, "--probe", spec]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def probe(spec: str) -> None:
    name, n, classes, test_images, shape = spec.split(":")
    n, classes, test_images = int(n), int(classes), int(test_images)
    shape = tuple(int(v) for v in shape.split(","))
    model_cfg, cfg = MODELS[name](), TrainerConfig(epochs=1, progress=False)

    def build(s):
        seed_everything(s)
        return build_model(model_cfg, shape, classes)

    x_train, y_train = torch.randn(1920, *shape), torch.randint(classes, (1920,))  # 30 steps
    x_test, y_test = torch.randn(test_images, *shape), torch.randint(classes, (test_images,))
    before = rss_peak_mb()
    tensors = TrainData(x_train, y_train, x_test, y_test)
    state, engine = start_run(build, list(range(n)), tensors, cfg, torch.device("cpu"))
    train_epoch(state, engine.step, len(x_train), cfg, StopRequest())
    engine.evaluate()
    print(f"{rss_peak_mb() - before:.1f}")


def bench_model(name, ds, device, sizes, epochs, seed, vmap) -> list[dict]:
    shape, classes = tuple(ds.x_train.shape[1:]), len(ds.classes)
    model_cfg, cfg = MODELS[name](), TrainerConfig(epochs=epochs, progress=False)

    def build(s):
        seed_everything(s)
        return build_model(model_cfg, shape, classes)

    x_train = data.to_device(ds.x_train, device, [0.5, 0.5])
    x_test = data.to_device(ds.x_test, device, [0.5, 0.5])
    y_train, y_test = ds.y_train.to(device), ds.y_test.to(device)
    runs = {}  # (seeds, path) -> (run state, step)
    for n in sizes:
        seeds, tensors = list(range(seed, seed + n)), TrainData(x_train, y_train, x_test, y_test)
        state, engine = start_run(build, seeds, tensors, cfg, device)
        runs[n, engine.path] = state, engine.step
        if vmap and n > 1:
            runs[n, "vmap"] = vmap_run(build, seeds, tensors, cfg, device)
    seconds, peaks, stop = {key: [] for key in runs}, {}, StopRequest()
    for _ in range(epochs):
        for key, (state, step) in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            train_epoch(state, step, len(x_train), cfg, stop)
            synchronize(device)
            seconds[key].append(time.perf_counter() - started)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                peaks[key] = max(peaks.get(key, 0.0), peak)
    if device.type == "cpu":
        for n, path in runs:
            if path != "vmap":
                peaks[n, path] = probe_rss(name, n, shape, classes, len(y_test))
    ones = [times for (n, path), times in seconds.items() if n == 1 and path != "vmap"]
    one = statistics.median(ones[0]) if ones else None
    rows = []
    for (n, path), times in seconds.items():
        median = statistics.median(times)
        rows.append(
            {
                "model": name,
                "seeds": n,
                "path": path,
                "epoch_seconds": [round(s, 4) for s in times],
                "median_seconds": round(median, 4),
                "x_one_seed": round(median / one, 2) if one else None,
                "per_seed": round(median / one / n, 3) if one else None,
                "peak_mb": round(peaks.get((n, path), float("nan")), 1),
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
    p.add_argument("--vmap", action="store_true", help="also time torch.func's vmap stacks")
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # one CPU memory probe (probe_rss)
    a = p.parse_args()
    if a.probe:
        probe(a.probe)
        return 0
    device = resolve_device(a.device)
    ds = data.load(DataConfig(name=a.data, root=a.root, train_size=a.train_size))
    sizes = [int(n) for n in a.seeds.split(",")]
    results = [
        row
        for name in a.models.split(",")
        for row in bench_model(name, ds, device, sizes, a.epochs, a.seed, a.vmap)
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
