"""Training: a run's state, one epoch, the loop that calls it, evaluation and checkpoints.

nanoGPT's shape: everything a run is lives in one `RunState` (model, optimiser, every random
state, where the epoch stands in images, history) with one save and one load;
`train_epoch` steps through the rest of the current epoch; `fit` is the loop that calls it,
evaluates and checkpoints. No file formats here but the checkpoint's.

Where the speed comes from (figures in the README): the data already sit on the device
(data.py) and an epoch is a seeded on-device permutation cut into slices; the loss of every
step goes into a device buffer that is read every `log_every` steps, so the host never
waits on the device in between; on CUDA the whole step (batch gather, forward, backward,
Adam) is captured once and replayed as a CUDA graph, which removes the per-kernel launch
cost that dominates a model as small as LeNet-5.
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

from cnnlab.config import ConfigError, Optimizer, TrainerConfig
from cnnlab.files import atomic_file
from cnnlab.outcome import Outcome, RunError, Status

log = logging.getLogger(__name__)


# ---- device, numerics and seeds ----------------------------------------------------------


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


@contextlib.contextmanager
def numerics(cfg: TrainerConfig):
    """Set every numeric flag both ways for one run and put the old values back after.

    Hydra's basic launcher runs all jobs of a sweep in one process, so a flag one job turns
    on must not outlive it. cuDNN's TF32 is on by default in torch: "fp32" turns it off.
    cuDNN is always held to deterministic algorithms: its fastest ones accumulate with
    atomics, and two runs of one seed then drift apart; on an H100 that costs LeNet-5
    0.25 -> 0.31 s an epoch, a price worth a seed that repeats.
    """
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    tf32 = cfg.precision == "tf32"
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.set_float32_matmul_precision("high" if tf32 else "highest")  # matmul TF32 or not
    torch.backends.cudnn.allow_tf32 = tf32
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield current_numerics()
    finally:
        precision, cudnn_tf32, algorithms, warn_only, deterministic, benchmark = saved
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = (
            deterministic,
            benchmark,
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def _plain(obj):
    """numpy's state with its arrays as lists: weights_only=True refuses numpy arrays."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj.tolist() if isinstance(obj, np.ndarray) else obj


# ---- the run state -----------------------------------------------------------------------


@dataclass
class RunState:
    """Everything a run is at one moment: what trains (one model, or the copies of
    `seeds` > 1 stacked as one), every random state, and where the current epoch stands,
    counted in images so that a resume with another batch size goes on at the very image
    where the run stopped. Each copy has its own data order, drawn as `seed=s` alone draws
    it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    seeds: list[int]
    data_rngs: list[torch.Generator]  # one per copy: draws each epoch's permutation
    epoch: int = 0  # epochs completed
    position: int = 0  # images of the current epoch's permutations already stepped on
    epoch_rngs: list[torch.Tensor] | None = None  # data_rngs at the epoch's start: its order
    partial_losses: list[list[float]] = field(default_factory=list)  # this epoch, per step
    history: list[dict] = field(default_factory=list)  # a row per epoch and seed
    diverged: dict[int, str] = field(default_factory=dict)  # seed -> what stopped that copy
    images_seen: int = 0  # over the whole resume chain (per copy)
    train_seconds: float = 0.0

    def live_rows(self, rows: list[dict]) -> list[dict]:
        """The rows of the copies that did not diverge: what every mean, curve and tracker
        reads (a diverged copy's losses are NaN)."""
        return [row for row in rows if row["seed"] not in self.diverged]

    def shown_copy(self) -> int:
        """The copy every picture shows: the first that did not diverge (else the first)."""
        return next((i for i, s in enumerate(self.seeds) if s not in self.diverged), 0)

    def state_dict(self) -> dict:
        """Tensors and plain values only, so it loads with torch.load(weights_only=True)."""
        mid_epoch = self.position > 0
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "seeds": list(self.seeds),
            "epoch": self.epoch,
            "position": self.position,
            "partial_losses": [list(step) for step in self.partial_losses],
            "history": self.history,
            "diverged": {str(seed): message for seed, message in self.diverged.items()},
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "rng": {
                "python": random.getstate(),
                "numpy": _plain(np.random.get_state(legacy=False)),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "data": self.epoch_rngs if mid_epoch else [g.get_state() for g in self.data_rngs],
            },
            "torch_version": str(torch.__version__),  # a str subclass that pickles as a class
        }

    def load_state_dict(self, state: dict, lr: float) -> None:
        """Restore a checkpoint; `lr` is the learning rate to go on with (it may change)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # fused Adam walks its state in the parameters' memory order: state saved with
        # another layout (NCHW on CUDA, NHWC on CPU) is copied into this one's
        for param, param_state in self.optimizer.state.items():
            for key, value in param_state.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    param_state[key] = torch.empty_like(param).copy_(value)
        self.epoch, self.position = state["epoch"], state["position"]
        self.partial_losses = [list(step) for step in state["partial_losses"]]
        self.history = list(state["history"])
        self.diverged = {int(seed): message for seed, message in state["diverged"].items()}
        self.images_seen, self.train_seconds = state["images_seen"], state["train_seconds"]
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])  # takes the key as a list as well
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        for generator, saved in zip(self.data_rngs, rng["data"], strict=True):
            generator.set_state(saved)
        self.epoch_rngs = list(rng["data"]) if self.position else None


class CheckpointError(RunError):
    """A checkpoint that cannot be written (the run failed), or read (resume= is bad input)."""


def save_checkpoint(state: dict, path: Path) -> None:
    """Written as files.write_atomic writes every run file: a process killed or a disk
    that fills mid-save leaves the previous checkpoint whole and no temporary file. A
    failed write raises (whatever torch.save raised: its zip writer's RuntimeError on a
    full disk too); it is never silent."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            torch.save(state, f)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"could not write checkpoint {path}: {reason}") from None


def load_checkpoint(path: Path) -> dict:
    """Tensors and plain values only: a pickled object (code that would run on load) is
    refused, and a truncated or corrupt file is an error that names it."""

    def refuse(message: str) -> CheckpointError:
        return CheckpointError(f"resume={path}: {message}", Status.bad_input)

    path = Path(path)
    if path.is_dir():  # a run folder
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise refuse("no such checkpoint (give a run folder or a .pt file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names a refused object "Unsupported global: GLOBAL module.name"; any other
        # unpickling error is a file that is damaged or not a torch checkpoint at all
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise refuse(
                f"{path} holds a pickled Python object ({found[1]}), not only tensors and "
                f"plain values, and cnnlab loads checkpoints with weights_only=True"
            ) from None
        raise refuse(
            f"{path} is truncated or corrupt, or not a torch checkpoint "
            f"(unreadable with weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise refuse(f"{path} is truncated or corrupt ({first_line})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise refuse(f"{path} is not a cnnlab checkpoint (no model or epoch entry)")
    return state


# ---- one step ----------------------------------------------------------------------------

OPTIMIZERS: dict[Optimizer, type[torch.optim.Optimizer]] = {
    Optimizer.adam: torch.optim.Adam,
    Optimizer.adamw: torch.optim.AdamW,
    Optimizer.sgd: torch.optim.SGD,
}


def make_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device, graph: bool):
    cls = OPTIMIZERS[cfg.optimizer]
    if cls is torch.optim.SGD:
        return cls(model.parameters(), lr=cfg.lr, momentum=0.9)
    # fused: one kernel for the whole update, on CUDA and on the CPU (one op for all
    # parameters instead of about ten per parameter; the same update to float rounding;
    # 2-core CPU, batch 64: MLP 1.23x, LeNet-5 1.03-1.17x faster). capturable: the step
    # count stays on the GPU, which graph capture needs.
    fused = device.type in ("cuda", "cpu")
    return cls(model.parameters(), lr=cfg.lr, fused=fused, capturable=graph)


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


def autocast(cfg: TrainerConfig, device: torch.device):
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False
    )


class GraphedStep:
    """A training step replayed from a CUDA graph for full batches.

    The first WARMUP calls run eagerly on a side stream (real steps, so no extra update is
    made; it lets cuDNN and the optimiser allocate their state), the next one captures the
    same function and replays it. A batch of another size (an epoch's short last batch)
    runs eagerly; the graph keeps its own memory, so that step cannot disturb it.
    """

    WARMUP = 3

    def __init__(self, step: Callable, shape: tuple[int, int], device: torch.device):
        self.step, self.calls, self.graph = step, 0, None
        self.idx = torch.zeros(shape, dtype=torch.long, device=device)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape != self.idx.shape:
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


@dataclass
class TrainData:
    """The normalised training and test tensors, already on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class Engine:
    """How a run computes: its step, its evaluation, and each copy as a plain model."""

    step: Callable[[torch.Tensor], torch.Tensor]  # idx [copies, batch] -> losses [copies]
    evaluate: Callable[[], list]  # an Evaluation per copy
    copy: Callable[[int], nn.Module]  # copy i as an ordinary model (pictures, report)
    path: str  # eager, compile or cuda_graph


def start_run(
    build: Callable[[int], nn.Module],
    seeds: list[int],
    data: TrainData,
    cfg: TrainerConfig,
    device: torch.device,
) -> tuple[RunState, Engine]:
    """A fresh run state and its engine. `build(seed)` makes the model `seed` alone would
    build; several seeds train together as one stacked computation (stack.py)."""
    path = choose_path(cfg, device)
    if len(seeds) == 1:
        model, optimizer, step, evaluate_all, copy = one_model(
            build(seeds[0]), data, cfg, device, path
        )
    else:
        from cnnlab.stack import SeedStack

        stack = SeedStack([build(s) for s in seeds], device, cfg, data, graph=path == "cuda_graph")
        model, optimizer, step, copy = stack.model, stack.optimizer, stack.step, stack.copy

        def evaluate_all():
            return stack.evaluate(data.x_test, data.y_test, cfg.eval_batch_size)

    if path == "cuda_graph":
        step = GraphedStep(step, (len(seeds), cfg.batch_size), device)
    rngs = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    return RunState(model, optimizer, list(seeds), rngs), Engine(step, evaluate_all, copy, path)


def one_model(model: nn.Module, data: TrainData, cfg: TrainerConfig, device, path: str):
    """One seed: the model itself, in the layout its step wants, with its optimiser."""
    model.to(device)
    if channels_last_pays(model, device):
        model.to(memory_format=torch.channels_last)  # in place, before the optimiser
        data.x_train = data.x_train.contiguous(memory_format=torch.channels_last)
        data.x_test = data.x_test.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, device, graph=path == "cuda_graph")
    forward = torch.compile(model) if path == "compile" else model
    amp = autocast(cfg, device)

    def step(idx: torch.Tensor) -> torch.Tensor:  # idx [1, batch] -> loss [1]
        optimizer.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(forward(data.x_train[idx[0]]), data.y_train[idx[0]])
        loss.backward()
        optimizer.step()
        return loss.detach().reshape(1)

    return model, optimizer, step, lambda: [evaluate(model, data, cfg)], lambda i: model


# ---- an epoch, evaluation and the loop ---------------------------------------------------


class Interrupted(BaseException):
    """SIGINT or SIGTERM to a StopRequest that does not defer: a BaseException, as
    KeyboardInterrupt is, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name}")
        self.signal = signum


class StopRequest:
    """SIGINT and SIGTERM inside `catching()`. While `deferred` a signal is only noted: the
    loop stops at its next check and saves a checkpoint, and a caller can finish its files
    first. Until a caller sets `deferred` (StopRequest(deferred=False)) the first signal
    raises Interrupted, so that a data load or a model build stops at once; any later
    signal is only noted, so that the files that record the stop get written."""

    def __init__(self, deferred: bool = True):
        self.signal: int | None = None
        self.deferred = deferred

    def _note(self, signum, frame):
        first, self.signal = self.signal is None, signum  # more signals just ask again
        if first and not self.deferred:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def catching(self):
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[sig] = signal.signal(sig, self._note)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def train_epoch(
    state: RunState, step: Callable, n: int, cfg: TrainerConfig, stop: StopRequest
) -> list[float] | Outcome:
    """Step through the rest of the current epoch, from image `state.position` of each
    copy's permutation. Returns each copy's mean training loss once the epoch is done (the
    state then stands at the start of the next epoch), or the Outcome that ended it early:
    a non-finite loss in every copy, or a stop signal (the state then stands where it
    stopped). A copy whose loss turns non-finite while others train on is recorded in
    state.diverged by its seed."""
    device, bs, seeds = state.data_rngs[0].device, cfg.batch_size, state.seeds
    if state.position == 0:
        state.epoch_rngs = [g.get_state() for g in state.data_rngs]
    else:  # resuming mid-epoch: draw this epoch's permutations again
        for generator, saved in zip(state.data_rngs, state.epoch_rngs, strict=True):
            generator.set_state(saved)
    perms = torch.stack([torch.randperm(n, device=device, generator=g) for g in state.data_rngs])
    starts = range(state.position, n, bs)
    losses = torch.empty(len(starts), len(seeds), device=device)
    done = len(state.partial_losses)  # steps taken before a resume
    bar = tqdm(
        total=done + len(starts),
        initial=done,
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    checked = 0  # losses[:checked] are checked
    with bar:
        for j, start in enumerate(starts):
            losses[j] = step(perms[:, start : start + bs])
            last = j + 1 == len(starts)
            if (j + 1) % cfg.log_every and not last and stop.signal is None:
                continue
            # one host-device sync per log_every steps: a NaN check and the running loss
            new, copies = losses[checked : j + 1], len(seeds)
            read = torch.cat([torch.isfinite(new).all(0), losses[: j + 1].mean(0)]).tolist()
            for i, finite in enumerate(read[:copies]):
                if not finite and seeds[i] not in state.diverged:
                    bad = int((~torch.isfinite(new[:, i])).nonzero()[0])
                    ended = diverged(state, float(new[bad, i]), done + checked + bad, i)
                    if ended is not None:
                        return ended
            state.images_seen += min(n, start + bs) - starts[checked]
            checked = j + 1
            state.position = min(n, start + bs)
            bar.update(done + j + 1 - bar.n)
            running = [
                m for m, s in zip(read[copies:], seeds, strict=True) if s not in state.diverged
            ]
            bar.set_postfix(loss=f"{sum(running) / len(running):.4f}", refresh=False)
            if stop.signal is not None and not last:
                state.partial_losses += losses[: j + 1].tolist()
                return interrupted(state, n, stop.signal)
    epoch_losses = torch.tensor(state.partial_losses + losses.tolist()).mean(0).tolist()
    state.epoch, state.position, state.partial_losses = state.epoch + 1, 0, []
    return epoch_losses


def interrupted(state: RunState, n: int, sig: int) -> Outcome:
    name = signal.Signals(sig).name
    where = f"epoch {state.epoch + 1}, image {state.position} of {n}"
    return Outcome(Status.interrupted, f"{name} at {where}: saved a checkpoint to resume", sig)


def diverged(state: RunState, value: float, step: int, copy: int) -> Outcome | None:
    """Record that a copy's loss turned non-finite. With one copy (or the last one still
    training) the run stops: that Outcome; otherwise the other copies train on: None."""
    where = f"loss became {value} at epoch {state.epoch + 1}, step {step + 1}"
    if len(state.seeds) > 1:
        seed = state.seeds[copy]
        state.diverged[seed] = f"seed {seed}: {where}"
        log.error("%s: that copy is left behind, the others train on", state.diverged[seed])
        if len(state.diverged) < len(state.seeds):
            return None
    kept = (
        f"the last good checkpoint (epoch {state.epoch}) is kept"
        if state.epoch
        else "no epoch had completed, so there is no checkpoint"
    )
    return Outcome(Status.diverged, f"{where}: stopped; {kept}")


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # on the CPU
    confidence: torch.Tensor  # softmax probability of the predicted class


@torch.no_grad()
def evaluate(model: nn.Module, data: TrainData, cfg: TrainerConfig) -> Evaluation:
    model.eval()
    amp = autocast(cfg, data.x_test.device)
    total_loss = torch.zeros((), device=data.x_test.device)
    preds, confs = [], []
    for i in range(0, len(data.x_test), cfg.eval_batch_size):
        x = data.x_test[i : i + cfg.eval_batch_size]
        y = data.y_test[i : i + cfg.eval_batch_size]
        with amp:
            logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum")
        conf, pred = logits.softmax(1).max(1)
        preds.append(pred)
        confs.append(conf)
    model.train()
    predictions = torch.cat(preds).cpu()
    n = max(1, len(data.y_test))
    accuracy = (predictions == data.y_test.cpu()).sum().item() / n
    return Evaluation(total_loss.item() / n, accuracy, predictions, torch.cat(confs).cpu())


def fit(
    state: RunState,
    engine: Engine,
    data: TrainData,
    cfg: TrainerConfig,
    stop: StopRequest,
    save: Callable[[RunState], None] = lambda state: None,
    on_epoch: Callable[[list[dict]], None] = lambda rows: None,
) -> tuple[Outcome, list | None]:
    """Train until cfg.epochs: each epoch, evaluate every copy, log a row per copy,
    `save`, call `on_epoch` with the epoch's rows.

    Stops early on a non-finite loss (the last good checkpoint is kept) or a stop signal
    (a checkpoint of the exact position is saved). Returns the outcome and the last
    evaluation of each copy (None when stopped early)."""
    state.model.train()
    evaluations = None
    while state.epoch < cfg.epochs:
        started = time.perf_counter()
        if stop.signal is None:
            ended = train_epoch(state, engine.step, len(data.x_train), cfg, stop)
        else:  # it came during the last step of the epoch before
            ended = interrupted(state, len(data.x_train), stop.signal)
        if data.x_train.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        state.train_seconds += seconds
        if isinstance(ended, Outcome):
            if ended.status == Status.interrupted:
                save(state)
                log.warning(ended.message)
            else:
                log.error(ended.message)
            return ended, None
        evaluations = engine.evaluate()
        rows = [
            {
                "epoch": state.epoch,
                "seed": seed,
                "train_loss": train_loss,
                "test_loss": evaluation.loss,
                "test_accuracy": evaluation.accuracy,
                "seconds": seconds,
            }
            for seed, train_loss, evaluation in zip(state.seeds, ended, evaluations, strict=True)
        ]
        state.history += rows
        log_epoch(state, rows, cfg.epochs)
        save(state)
        on_epoch(rows)
    if evaluations is None:  # a resumed, finished run (or 0 epochs): evaluate it as it is
        evaluations = engine.evaluate()
    return Outcome(Status.completed), evaluations


def log_epoch(state: RunState, rows: list[dict], epochs: int) -> None:
    """One line per epoch; with several seeds, the mean and spread of the copies still
    training."""
    alive = state.live_rows(rows)
    scale = {"train_loss": 1, "test_loss": 1, "test_accuracy": 100}
    unit = {"train_loss": "", "test_loss": "", "test_accuracy": "%"}
    parts = []
    for key, k in scale.items():
        values = torch.tensor([k * row[key] for row in alive], dtype=torch.float64)
        digits = 2 if k == 100 else 4
        spread = f" ± {values.std():.{digits}f}" if len(alive) > 1 else ""
        parts.append(f"{key} {values.mean():.{digits}f}{unit[key]}{spread}")
    seeds = f" ({len(alive)} seeds)" if len(alive) > 1 else ""
    log.info(
        "epoch %d/%d  %s%s  %.2fs", state.epoch, epochs, "  ".join(parts), seeds, rows[0]["seconds"]
    )
