"""cnnlab bench: seconds per epoch of cnnlab's loop against the chapter's classic pipeline.

Both pipelines train the same model (built by cnnlab, same seed) with the chapter's
settings (batch 64, Adam 1e-3) on the same data, in one process on one device:
  classic: a torchvision-style Dataset that turns each uint8 image into a PIL image, then
           ToTensor + Normalize (what torchvision.datasets.FashionMNIST does), a
           DataLoader(batch_size=64) shuffled each epoch, and `loss.item()` after every
           step. Its shuffle is drawn the way cnnlab draws its own (one randperm per epoch
           from a generator seeded alike, on the same device), so both see the same batches
           and their accuracies differ only by float rounding, not by luck;
  cnnlab:  cnnlab.loop's start_run and train_epoch, the step and epoch every run uses
           (its own fast path: eager, CUDA graph, ...).
Epochs alternate between the two (classic 1, cnnlab 1, classic 2, ...), so a change in
the machine's background load hits both. An epoch's time is its training loop only
(evaluation excluded), measured after the device has finished its work.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as transforms
from PIL import Image
from torch.utils.data import DataLoader

from cnnlab import data, models
from cnnlab.config import DataConfig, SyntheticDataConfig, TrainerConfig
from cnnlab.devices import device_name, resolve_device, seed_everything
from cnnlab.engine import TrainData
from cnnlab.loop import StopRequest, start_run, train_epoch
from cnnlab.models import build_model
from cnnlab.outcome import ConfigError

# the default config of each model schema: "mlp" and "lenet5", the chapter's two models
MODELS = {schema().name: schema for schema in models.MODELS}
# the data it loads: the built-in sets, which need no keys but their name, and synthetic
DATA_NAMES = [name for name, source in data.SOURCES.items() if source.schema is DataConfig]
DATA_NAMES += ["synthetic"]
BATCH_SIZE, LR = 64, 1e-3  # the chapter's settings


class ClassicDataset(torch.utils.data.Dataset):
    """torchvision's MNIST-style datasets: uint8 images, a PIL image and transforms per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, normalize):
        mean, std = normalize
        channels = x.shape[1]
        # stored as torchvision stores them: N x H x W (gray) or N x H x W x C
        self.images = x[:, 0] if channels == 1 else x.permute(0, 2, 3, 1).contiguous()
        self.targets = y
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,) * channels, (std,) * channels)]
        )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image, target = self.images[i], int(self.targets[i])
        return self.transform(Image.fromarray(image.numpy())), target


class SameOrder(torch.utils.data.Sampler):
    """shuffle=True's job, drawing each epoch's order as cnnlab's Trainer does."""

    def __init__(self, n: int, seed: int, device: torch.device):
        self.n, self.device = n, device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = torch.randperm(self.n, device=self.device, generator=self.generator)
        return iter(perm.tolist())


class ClassicRun:
    """The chapter's loop, one epoch per call."""

    def __init__(self, model, ds: data.Dataset, normalize, device: torch.device, seed: int):
        self.model, self.device = model, device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        self.train_loader = DataLoader(
            ClassicDataset(ds.x_train, ds.y_train, normalize),
            batch_size=BATCH_SIZE,
            sampler=SameOrder(len(ds.y_train), seed, device),
        )
        self.test_loader = DataLoader(
            ClassicDataset(ds.x_test, ds.y_test, normalize), batch_size=1000
        )
        self.epoch_seconds: list[float] = []

    def epoch(self) -> None:
        self.model.train()
        started = time.perf_counter()
        for inputs, labels in self.train_loader:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(inputs), labels)
            loss.backward()
            self.optimizer.step()
            loss.item()  # the chapter reads the loss every step for its progress bar
        synchronize(self.device)
        self.epoch_seconds.append(time.perf_counter() - started)

    @torch.no_grad()
    def accuracy(self) -> float:
        self.model.eval()
        correct = sum(
            (self.model(x.to(self.device)).argmax(1).cpu() == y).sum().item()
            for x, y in self.test_loader
        )
        return correct / len(self.test_loader.dataset)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict:
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def summary(seconds: list[float], accuracy: float, **extra) -> dict:
    return {
        "epoch_seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 4),
        "accuracy": round(accuracy, 4),
        **extra,
    }


def bench_model(
    name: str, data_cfg, ds: data.Dataset, device, epochs: int, seed: int, classic: bool
):
    input_shape, classes = data.spec(data_cfg)
    norm = data_cfg.normalize

    def fresh_model():
        seed_everything(seed)  # same initial weights for both
        return build_model(MODELS[name](), input_shape, len(classes)).to(device)

    run = ClassicRun(fresh_model(), ds, norm, device, seed) if classic else None
    cfg = TrainerConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, progress=False)
    tensors = TrainData(
        data.to_device(ds.x_train, device, norm),
        ds.y_train.to(device),
        data.to_device(ds.x_test, device, norm),
        ds.y_test.to(device),
    )
    state, engine = start_run(lambda s: fresh_model(), [seed], tensors, cfg, device)
    seconds = []
    stop = StopRequest()
    for _ in range(epochs):
        if run is not None:
            run.epoch()
        started = time.perf_counter()
        train_epoch(state, engine.step, len(tensors.x_train), cfg, stop)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    out = {
        "model": name,
        "cnnlab": summary(
            seconds, engine.evaluate(tensors.x_test, tensors.y_test)[0].accuracy, path=engine.path
        ),
    }
    if run is not None:
        out["classic"] = summary(run.epoch_seconds, run.accuracy())
        classic_s, cnnlab_s = out["classic"]["median_seconds"], out["cnnlab"]["median_seconds"]
        out["speedup"] = round(classic_s / cnnlab_s, 2)
    return out


def print_table(report: dict) -> None:
    m, s = report["machine"], report["settings"]
    print(
        f"cnnlab bench  {m['date']}  torch {m['torch_version']}  {m['device']} "
        f"({m['device_name']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, "
        f"load {m['load_average_1min']})"
    )
    print(
        f"data {s['data']} ({s['train_images']} train / {s['test_images']} test images), "
        f"batch {s['batch_size']}, Adam lr {s['lr']}, seed {s['seed']}, "
        f"{s['epochs']} epochs"
    )
    print(
        f"{'model':8} {'classic s/epoch':>15} {'cnnlab s/epoch':>15} {'speed-up':>9} "
        f"{'classic acc':>12} {'cnnlab acc':>11}  cnnlab path"
    )
    for r in report["results"]:
        c, b = r.get("classic"), r["cnnlab"]
        classic_s, speedup, classic_acc = (
            (c["median_seconds"], f"{r['speedup']}x", f"{100 * c['accuracy']:.2f}%")
            if c
            else ("-", "-", "-")
        )
        cnnlab_acc = f"{100 * b['accuracy']:.2f}%"
        print(
            f"{r['model']:8} {classic_s:>15} {b['median_seconds']:>15} {speedup:>9} "
            f"{classic_acc:>12} {cnnlab_acc:>11}  {b['path']}"
        )
    print(
        f"s/epoch: median over all {s['epochs']} epochs (the first one included) of the "
        f"training loop's seconds, evaluation excluded; speed-up = classic / cnnlab"
    )


def main(
    *,
    device: str,
    data_name: str,
    root: str,
    epochs: int,
    model_names: list[str],
    classic: bool,
    train_size: int | None,
    threads: int | None,
    seed: int,
    out: str | None,
) -> int:
    """`cnnlab bench` on the values cli.py parsed: times each of `model_names` (MODELS) on one of
    DATA_NAMES, prints the table and writes it to `out` as JSON."""
    if threads:
        torch.set_num_threads(threads)
    kw = {"root": root} | ({"train_size": train_size} if train_size else {})
    try:
        device = resolve_device(device)
        data_cfg = (
            SyntheticDataConfig(**kw) if data_name == "synthetic" else DataConfig(data_name, **kw)
        )
        ds = data.load(data_cfg)
    except (ConfigError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    report = {
        "machine": machine_info(device),
        "settings": {
            "data": data_name,
            "train_images": len(ds.y_train),
            "test_images": len(ds.y_test),
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "optimizer": "adam",
            "seed": seed,
            "epochs": epochs,
            "median_over": "all epochs, first included; training loop only",
        },
        "results": [
            bench_model(n, data_cfg, ds, device, epochs, seed, classic) for n in model_names
        ],
    }
    print_table(report)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return 0
