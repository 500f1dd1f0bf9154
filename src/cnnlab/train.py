"""Fit, evaluate, checkpoint and resume. No file formats here but the checkpoint's.

The data already sit on the device (data.py); an epoch is a seeded on-device permutation
cut into slices. The loss of every step goes into a device buffer and is read only every
`log_every` steps, so the host never waits on the device in between. On CUDA the whole
step (batch gather, forward, backward, Adam) is captured once and replayed as a CUDA graph,
which removes the per-kernel launch cost that dominates a model as small as LeNet-5.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import platform
import random
import re
import signal
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnlab.config import ConfigError, TrainerConfig

log = logging.getLogger(__name__)


# ---- device and seeds --------------------------------------------------------------------


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def _plain(obj):
    """numpy's state with its arrays as lists: weights_only=True refuses numpy arrays."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj.tolist() if isinstance(obj, np.ndarray) else obj


def rng_state(data_generator: torch.Generator) -> dict:
    """Every random state a run depends on, as tensors and plain values (weights_only-safe)."""
    return {
        "python": random.getstate(),
        "numpy": _plain(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_generator.get_state(),
    }


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # takes the key as a list as well
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    data_generator.set_state(state["data"])


# ---- checkpoints -------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temporary file, fsync, then rename over `path`: a process killed mid-save
    leaves the previous checkpoint whole. A failed write raises; it is never silent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
    except OSError as e:
        with contextlib.suppress(OSError):  # e.g. the folder itself could not be made
            tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {e}") from None


def load_checkpoint(path: Path) -> dict:
    """Tensors and plain values only: a pickled object (code that would run on load) is
    refused, and a truncated or corrupt file is an error that names it."""
    path = Path(path)
    if path.is_dir():  # a run folder
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"resume={path}: no such checkpoint (give a run folder or a .pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names a refused object "Unsupported global: GLOBAL module.name"; any other
        # unpickling error is a file that is damaged or not a torch checkpoint at all
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{path} was refused: it holds a pickled Python object ({found[1]}), not only "
                f"tensors and plain values, and cnnlab loads checkpoints with weights_only=True"
            ) from None
        raise CheckpointError(
            f"{path} is truncated or corrupt, or not a torch checkpoint "
            f"(unreadable with weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first_line})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (no model or epoch entry)")
    return state


# ---- training ----------------------------------------------------------------------------


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # on the CPU
    confidence: torch.Tensor  # softmax probability of the predicted class


@dataclass
class FitResult:
    status: str  # completed | diverged | interrupted
    history: list[dict] = field(default_factory=list)
    evaluation: Evaluation | None = None
    train_seconds: float = 0.0
    images_seen: int = 0
    message: str = ""
    signal: int | None = None  # the signal that interrupted the run


def make_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device, graph: bool):
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    if device.type == "cuda":
        # fused: one kernel for the whole update; capturable: its step count stays on the
        # GPU, which graph capture needs
        return cls(params, lr=cfg.lr, fused=True, capturable=graph)
    # CPU: the fused kernel too (one op for all parameters instead of about ten per
    # parameter); the same update to float rounding. On the 2-core CPU, steps of batch 64
    # timed interleaved with the default (two runs): MLP 1.23x, LeNet-5 1.03-1.17x faster.
    return cls(params, lr=cfg.lr, fused=device.type == "cpu")


def channels_last_pays(model: nn.Module, device: torch.device) -> bool:
    """On CPU, oneDNN's convolutions and max-pooling skip their layout conversions when
    tensors are NHWC (channels_last). On the 2-core CPU, steps timed interleaved (two runs):
    LeNet-5 with fused Adam 1.08-1.2x faster in NHWC than NCHW, 1.18-1.30x with both
    against NCHW and the default Adam; the wide and deep variants about 1.2x. BatchNorm's
    NHWC kernel is slower for few channels (3x at 6 channels), so models with it stay NCHW.
    Same math, other rounding: losses match NCHW to ~1e-7 over the first steps."""
    modules = list(model.modules())
    return (
        device.type == "cpu"
        and any(isinstance(m, nn.Conv2d) for m in modules)
        and not any(isinstance(m, nn.BatchNorm2d) for m in modules)
    )


def choose_path(cfg: TrainerConfig, device: torch.device) -> str:
    """eager | compile | cuda_graph: the fastest path that gives the same results."""
    if cfg.compile:
        return "compile"
    graph_ok = device.type == "cuda" and cfg.optimizer != "sgd"
    if cfg.cuda_graph == "true" and not graph_ok:
        raise ConfigError(
            f"trainer.cuda_graph=true needs device=cuda and adam/adamw (got device={device}, "
            f"optimizer={cfg.optimizer}): use trainer.cuda_graph=auto"
        )
    return "cuda_graph" if graph_ok and cfg.cuda_graph != "false" else "eager"


class GraphedStep:
    """A training step replayed from a CUDA graph for full batches.

    The first WARMUP calls run eagerly on a side stream (real steps, so no extra update is
    made; it lets cuDNN and the optimiser allocate their state), the next one captures the
    same function and replays it. A batch of another size (an epoch's short last batch)
    runs eagerly; the graph keeps its own memory, so that step cannot disturb it.
    """

    WARMUP = 3

    def __init__(self, step: Callable, batch_size: int, device: torch.device):
        self.step, self.calls, self.graph = step, 0, None
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if len(idx) != len(self.idx):
            return self.step(idx)
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(idx)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        self.idx.copy_(idx)
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.step(self.idx)
        self.graph.replay()
        return self.loss


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        cfg: TrainerConfig,
        device: torch.device,
        seed: int = 0,
        checkpoint_path: Path | None = None,
        extra_state: dict | None = None,
    ):
        if channels_last_pays(model, device):
            model.to(memory_format=torch.channels_last)  # in place, before the optimizer
            x_train, x_test = (
                x.contiguous(memory_format=torch.channels_last) for x in (x_train, x_test)
            )
        self.model, self.cfg, self.device = model, cfg, device
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.checkpoint_path = checkpoint_path
        self.extra_state = extra_state or {}  # stored in checkpoints (config, for resume checks)
        self.path = choose_path(cfg, device)
        self.optimizer = make_optimizer(model, cfg, device, graph=self.path == "cuda_graph")
        self.data_generator = torch.Generator(device=device).manual_seed(seed)
        self.epoch, self.step_in_epoch, self.history = 0, 0, []
        self.partial_losses: torch.Tensor | None = None  # losses of an interrupted epoch
        self.train_seconds, self.images_seen = 0.0, 0
        self.stop_signal: int | None = None
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False
        )
        self.forward = torch.compile(model) if self.path == "compile" else model

        def step(idx: torch.Tensor) -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                loss = F.cross_entropy(self.forward(self.x_train[idx]), self.y_train[idx])
            loss.backward()
            self.optimizer.step()
            return loss.detach()

        self.train_step = (
            GraphedStep(step, cfg.batch_size, device) if self.path == "cuda_graph" else step
        )

    # -- state ----------------------------------------------------------------------------

    def state(self, epoch_start_data_state: torch.Tensor | None = None) -> dict:
        rng = rng_state(self.data_generator)
        if epoch_start_data_state is not None:  # mid-epoch: replay this epoch's permutation
            rng["data"] = epoch_start_data_state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "partial_losses": self.partial_losses,
            "history": self.history,
            "rng": rng,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
            "torch_version": str(torch.__version__),  # a str subclass that pickles as a class
            **self.extra_state,
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a resumed run may change trainer.lr
            group["lr"] = self.cfg.lr
        # fused Adam walks its state in the parameters' memory order: state saved with
        # another layout (NCHW on CUDA, NHWC on CPU) is copied into this one's
        for param, param_state in self.optimizer.state.items():
            for key, value in param_state.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    param_state[key] = torch.empty_like(param).copy_(value)
        self.epoch, self.step_in_epoch = state["epoch"], state.get("step", 0)
        self.partial_losses = state.get("partial_losses")
        self.history = list(state["history"])
        self.train_seconds = state.get("train_seconds", 0.0)
        self.images_seen = state.get("images_seen", 0)
        set_rng_state(state["rng"], self.data_generator)

    def save(self, epoch_start_data_state=None) -> None:
        if self.checkpoint_path is not None and self.cfg.checkpoint:
            save_checkpoint(self.state(epoch_start_data_state), self.checkpoint_path)

    # -- loops ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        self.model.eval()
        total_loss = torch.zeros((), device=self.device)
        preds, confs = [], []
        for i in range(0, len(self.x_test), self.cfg.eval_batch_size):
            x = self.x_test[i : i + self.cfg.eval_batch_size]
            y = self.y_test[i : i + self.cfg.eval_batch_size]
            with self.autocast:
                logits = self.model(x).float()
            total_loss += F.cross_entropy(logits, y, reduction="sum")
            conf, pred = logits.softmax(1).max(1)
            preds.append(pred)
            confs.append(conf)
        self.model.train()
        predictions = torch.cat(preds).cpu()
        n = max(1, len(self.y_test))
        accuracy = (predictions == self.y_test.cpu()).sum().item() / n
        return Evaluation(total_loss.item() / n, accuracy, predictions, torch.cat(confs).cpu())

    @contextlib.contextmanager
    def catching_signals(self):
        """Inside, SIGINT and SIGTERM only set stop_signal: the loop stops at the next step
        and saves a checkpoint, and a caller can finish writing its files first."""
        previous = {}

        def request_stop(signum, frame):
            self.stop_signal = signum  # a second signal just asks again: no harm done

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> FitResult:
        """Train until cfg.epochs; stop early on a non-finite loss or SIGINT/SIGTERM."""
        with self.catching_signals():
            return self._fit(on_epoch)

    def _fit(self, on_epoch) -> FitResult:
        n, bs = len(self.x_train), self.cfg.batch_size
        steps = (n + bs - 1) // bs
        evaluation = None
        self.model.train()
        while self.epoch < self.cfg.epochs:
            epoch_start_state = self.data_generator.get_state()
            perm = torch.randperm(n, device=self.device, generator=self.data_generator)
            losses = torch.empty(steps, device=self.device)
            first = self.step_in_epoch  # > 0 when resuming an interrupted epoch
            if first:
                losses[:first] = self.partial_losses.to(self.device)
            bar = tqdm(
                total=steps,
                initial=first,
                desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                disable=not self.cfg.progress,
                leave=False,
                dynamic_ncols=True,
            )
            started, checked = time.perf_counter(), first
            for j in range(first, steps):
                losses[j] = self.train_step(perm[j * bs : (j + 1) * bs])
                if (j + 1) % self.cfg.log_every and j + 1 < steps and self.stop_signal is None:
                    continue
                # one host-device sync per log_every steps: the running loss and a NaN check
                total, finite = torch.stack(
                    [losses[: j + 1].sum(), torch.isfinite(losses[checked : j + 1]).all()]
                ).tolist()
                if not finite:
                    bar.close()
                    bad = checked + int((~torch.isfinite(losses[checked : j + 1])).nonzero()[0])
                    return self._diverged(float(losses[bad]), bad)
                checked = j + 1
                bar.update(j + 1 - bar.n)
                bar.set_postfix(loss=f"{total / (j + 1):.4f}", refresh=False)
                if self.stop_signal is not None:
                    bar.close()
                    return self._interrupted(j + 1, losses, epoch_start_state, started)
            bar.close()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            self.train_seconds += seconds
            self.images_seen += n - min(n, first * bs)
            evaluation = self.evaluate()
            self.epoch, self.step_in_epoch, self.partial_losses = self.epoch + 1, 0, None
            row = {
                "epoch": self.epoch,
                "train_loss": losses.mean().item(),
                "test_loss": evaluation.loss,
                "test_accuracy": evaluation.accuracy,
                "seconds": seconds,
            }
            self.history.append(row)
            log.info(
                "epoch %d/%d  train_loss %.4f  test_loss %.4f  test_accuracy %.2f%%  %.2fs",
                self.epoch,
                self.cfg.epochs,
                row["train_loss"],
                row["test_loss"],
                100 * row["test_accuracy"],
                seconds,
            )
            self.save()
            if on_epoch is not None:
                on_epoch(row)
        if evaluation is None:  # nothing left to train (a resumed, finished run)
            evaluation = self.evaluate()
        return FitResult(
            "completed", self.history, evaluation, self.train_seconds, self.images_seen
        )

    def _diverged(self, value: float, step: int) -> FitResult:
        kept = (
            f"the last good checkpoint (epoch {self.epoch}) is kept"
            if self.epoch
            else "no epoch had completed, so there is no checkpoint"
        )
        message = f"loss became {value} at epoch {self.epoch + 1}, step {step + 1}: stopped; {kept}"
        log.error(message)
        return FitResult(
            "diverged", self.history, None, self.train_seconds, self.images_seen, message
        )

    def _interrupted(self, done, losses, epoch_start_state, started) -> FitResult:
        self.train_seconds += time.perf_counter() - started
        self.images_seen += (done - self.step_in_epoch) * self.cfg.batch_size
        self.step_in_epoch, self.partial_losses = done, losses[:done].cpu()
        name = signal.Signals(self.stop_signal).name
        message = f"{name} at epoch {self.epoch + 1}, step {done}: saved a checkpoint to resume"
        self.save(epoch_start_state)
        log.warning(message)
        return FitResult(
            "interrupted",
            self.history,
            None,
            self.train_seconds,
            self.images_seen,
            message,
            self.stop_signal,
        )
