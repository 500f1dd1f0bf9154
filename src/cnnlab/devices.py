"""Where a run computes and how: the devices there are, the numeric flags of one run
(TF32, deterministic algorithms) set and put back, and the seeds of every random source."""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch

from cnnlab.config import TrainerConfig
from cnnlab.outcome import ConfigError


def available_devices() -> list[str]:
    found = ["cpu"]
    found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str) -> torch.device:
    """auto = cuda, else mps, else cpu; a device that is not there is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    ok = device is not None and (
        device.type == "cpu"
        or (device.type == "cuda" and (device.index or 0) < torch.cuda.device_count())
        or (device.type == "mps" and torch.backends.mps.is_available())
    )
    if not ok:
        raise ConfigError(
            f"device={name!r} is not available on this machine: available are "
            f"{', '.join(available_devices())} (or auto)"
        )
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or on Linux the CPU's marketing name (else the architecture)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def current_numerics() -> dict[str, bool]:
    """The flags that decide how float32 math runs, as metrics.json records them."""
    return {
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def deterministic_algorithms() -> tuple[bool, bool]:
    """torch.use_deterministic_algorithms's (mode, warn_only)."""
    return torch.are_deterministic_algorithms_enabled(), (
        torch.is_deterministic_algorithms_warn_only_enabled()
    )


def set_deterministic_algorithms(state: tuple[bool, bool]) -> None:
    # imports torch._inductor (and with it torch._dynamo, about 1.8 s on the 2-core CPU)
    # to set inductor's flag too: called only where the mode changes
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])


cudnn = torch.backends.cudnn
# each numeric flag a run sets: how to read it and how to set it
SWITCHES = {
    "matmul_precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "cudnn_tf32": (lambda: cudnn.allow_tf32, lambda on: setattr(cudnn, "allow_tf32", on)),
    "deterministic_algorithms": (deterministic_algorithms, set_deterministic_algorithms),
    "cudnn_deterministic": (
        lambda: cudnn.deterministic,
        lambda on: setattr(cudnn, "deterministic", on),
    ),
    "cudnn_benchmark": (lambda: cudnn.benchmark, lambda on: setattr(cudnn, "benchmark", on)),
}


@contextlib.contextmanager
def numerics(cfg: TrainerConfig):
    """Every numeric flag as the run wants it, and after the run the old values back.

    Hydra's basic launcher runs all jobs of a sweep in one process, so a flag one job turns
    on must not outlive it. A flag that already has the value wanted is left alone: torch
    and the process keep it as it was, and setting torch.use_deterministic_algorithms costs
    imports of torch's compiler (issue 30). cuDNN's TF32 is on by default in torch: "fp32"
    turns it off. cuDNN is always held to deterministic algorithms: its fastest ones
    accumulate with atomics, and two runs of one seed then drift apart; on an H100 that
    costs LeNet-5 0.25 -> 0.31 s an epoch, a price worth a seed that repeats.
    """
    tf32 = cfg.precision == "tf32"
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    wanted = {
        "matmul_precision": "high" if tf32 else "highest",  # matmul TF32 or not
        "cudnn_tf32": tf32,
        "deterministic_algorithms": (cfg.deterministic, False),
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
    }
    changed = {}  # flag: its value before the run
    try:
        for name, value in wanted.items():
            get, put = SWITCHES[name]
            before = get()
            if before != value:
                put(value)
                changed[name] = before
        yield current_numerics()
    finally:
        for name, before in changed.items():
            SWITCHES[name][1](before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
