"""Training: a run's state, one epoch, and the loop that calls it.

nanoGPT's shape: everything a run is lives in one `RunState` (model, optimiser, every random
state, where the epoch stands in images, history, the validation selection) with one
state_dict and one load; `train_epoch` steps through the rest of the current epoch; `fit` is
the loop that calls it, evaluates (on the validation split when there is one: the test set
is read once, at the end) and hands the state to its caller to checkpoint. The checkpoint
file is checkpoints.py's; what a step computes is stack.py's (one model or a stack of seeds,
alike), its pieces engine.py's; choosing an epoch on validation is selection.py's.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cnnlab.config import Keep, TrainerConfig
from cnnlab.engine import CpuOptimizer, GraphedStep, TrainData, choose_path
from cnnlab.outcome import Outcome, Status
from cnnlab.selection import Selection
from cnnlab.stack import SeedStack, SingleModel

log = logging.getLogger(__name__)


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
    optimizer: CpuOptimizer | torch.optim.Optimizer
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
    selection: Selection | None = None  # with a validation split: each copy's best epoch
    stopped_early: bool = False  # trainer.patience ran out

    def live_rows(self, rows: list[dict]) -> list[dict]:
        """The rows of the copies that did not diverge: what every mean, curve and tracker
        reads (a diverged copy's losses are NaN)."""
        return [row for row in rows if row["seed"] not in self.diverged]

    def live(self) -> list[bool]:
        """Per copy: True while it has not diverged."""
        return [seed not in self.diverged for seed in self.seeds]

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
            "selection": self.selection.state_dict() if self.selection else None,
            "stopped_early": self.stopped_early,
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
        if self.selection is not None and state.get("selection"):
            self.selection.load_state_dict(state["selection"])
        self.stopped_early = state.get("stopped_early", False)
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])  # takes the key as a list as well
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        for generator, saved in zip(self.data_rngs, rng["data"], strict=True):
            generator.set_state(saved)
        self.epoch_rngs = list(rng["data"]) if self.position else None


# ---- what trains -------------------------------------------------------------------------


@dataclass
class Training:
    """How a run computes: its step, its evaluation and each copy as a plain model, from
    what trains (stack.SingleModel or stack.SeedStack: the same interface), and its path."""

    step: Callable[[torch.Tensor], torch.Tensor]  # idx [copies, batch] -> losses [copies]
    evaluate: Callable[[torch.Tensor, torch.Tensor], list]  # (x, y) -> an Evaluation per copy
    copy: Callable[[int], nn.Module]  # copy i as an ordinary model (pictures, report)
    path: str  # eager, compile or cuda_graph


def start_run(
    build: Callable[[int], nn.Module],
    seeds: list[int],
    data: TrainData,
    cfg: TrainerConfig,
    device: torch.device,
) -> tuple[RunState, Training]:
    """A fresh run state and how it trains. `build(seed)` makes the model `seed` alone would
    build; several seeds train together as one stacked computation (stack.py)."""
    path = choose_path(cfg, device)
    graph = path == "cuda_graph"
    if len(seeds) == 1:
        copies = SingleModel(build(seeds[0]), device, cfg, data, graph, path == "compile")
    else:
        copies = SeedStack([build(s) for s in seeds], device, cfg, data, graph)
    step = GraphedStep(copies.step, (len(seeds), cfg.batch_size), device) if graph else copies.step
    rngs = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    state = RunState(copies.model, copies.optimizer, list(seeds), rngs)
    if data.has_validation:
        state.selection = Selection(len(seeds), keep_weights=cfg.keep == Keep.best)
    return state, Training(step, copies.evaluate, copies.copy, path)


# ---- an epoch and the loop ---------------------------------------------------------------


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
    device = state.data_rngs[0].device
    bs = cfg.batch_size
    seeds = state.seeds
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
            finite, means = read_losses(losses, checked, j + 1)  # one host-device sync
            ended = check_finite(state, losses[checked : j + 1], finite, done + checked)
            if ended is not None:
                return ended
            state.images_seen += min(n, start + bs) - starts[checked]
            checked = j + 1
            state.position = min(n, start + bs)
            bar.update(done + j + 1 - bar.n)
            bar.set_postfix(loss=f"{live_mean(state, means):.4f}", refresh=False)
            if stop.signal is not None and not last:
                state.partial_losses += losses[: j + 1].tolist()
                return interrupted(state, n, stop.signal)
    return end_epoch(state, losses)


def read_losses(losses: torch.Tensor, checked: int, upto: int) -> tuple[list[bool], list[float]]:
    """Per copy, whether its losses of steps checked..upto are all finite, and its mean loss
    of the epoch's steps so far: one host-device sync for both (the losses stay on the
    device between checks, every trainer.log_every steps)."""
    copies = losses.shape[1]
    read = torch.cat([torch.isfinite(losses[checked:upto]).all(0), losses[:upto].mean(0)])
    values = read.tolist()
    return [bool(v) for v in values[:copies]], values[copies:]


def check_finite(state: RunState, new: torch.Tensor, finite: list[bool], first: int):
    """A copy whose `new` losses (the steps since the last check, the first of them step
    `first` of the epoch) are not all finite has diverged (diverged() records it); the
    Outcome when that stops the run, else None."""
    for i, ok in enumerate(finite):
        if not ok and state.seeds[i] not in state.diverged:
            bad = int((~torch.isfinite(new[:, i])).nonzero()[0])
            ended = diverged(state, float(new[bad, i]), first + bad, i)
            if ended is not None:
                return ended
    return None


def live_mean(state: RunState, means: list[float]) -> float:
    """The mean of the copies that did not diverge (the progress bar's running loss)."""
    live = [m for m, alive in zip(means, state.live(), strict=True) if alive]
    return sum(live) / len(live)


def end_epoch(state: RunState, losses: torch.Tensor) -> list[float]:
    """Each copy's mean training loss over the whole epoch (the steps before a resume
    too); the state moves to the start of the next epoch."""
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


def fit(
    state: RunState,
    training: Training,
    data: TrainData,
    cfg: TrainerConfig,
    stop: StopRequest,
    save: Callable[[RunState], None] = lambda state: None,
    on_epoch: Callable[[list[dict]], None] = lambda rows: None,
) -> tuple[Outcome, list | None]:
    """Train until cfg.epochs: each epoch, evaluate every copy (on the validation split when
    there is one, else on the test set), log a row per copy, `save`, call `on_epoch` with
    the epoch's rows.

    Stops early on a non-finite loss (the last good checkpoint is kept), a stop signal (a
    checkpoint of the exact position is saved) or trainer.patience running out (a completed
    run). Returns the outcome and each copy's test evaluation of the weights trainer.keep
    names (None when stopped by a loss or a signal)."""
    state.model.train()
    evaluations = None
    if state.stopped_early and not state.selection.exhausted(cfg.patience, state.live()):
        state.stopped_early = False  # resumed with more patience, or none: it trains on
    while state.epoch < cfg.epochs and not state.stopped_early:
        started = time.perf_counter()
        if stop.signal is None:
            ended = train_epoch(state, training.step, len(data.x_train), cfg, stop)
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
        evaluations, rows = evaluate_epoch(state, training, data, ended, seconds)
        state.history += rows
        log_epoch(state, rows, cfg.epochs)
        stop_early(state, cfg.patience)
        save(state)
        on_epoch(rows)
    return Outcome(Status.completed), test_evaluation(state, training, data, evaluations)


def evaluate_epoch(state: RunState, training: Training, data: TrainData, losses, seconds: float):
    """Each copy's evaluation after an epoch and its history row; with a validation split,
    the copies' best epochs move on."""
    split = "val" if data.has_validation else "test"
    x, y = (data.x_val, data.y_val) if data.has_validation else (data.x_test, data.y_test)
    evaluations = training.evaluate(x, y)
    rows = [
        {
            "epoch": state.epoch,
            "seed": seed,
            "train_loss": train_loss,
            f"{split}_loss": evaluation.loss,
            f"{split}_accuracy": evaluation.accuracy,
            "seconds": seconds,
        }
        for seed, train_loss, evaluation in zip(state.seeds, losses, evaluations, strict=True)
    ]
    if state.selection is not None:
        accuracies = [evaluation.accuracy for evaluation in evaluations]
        state.selection.update(state.epoch, accuracies, state.model, state.live())
    return evaluations, rows


def stop_early(state: RunState, patience: int | None) -> None:
    selection = state.selection
    if selection is not None and selection.exhausted(patience, state.live()):
        state.stopped_early = True
        best = [e for e, ok in zip(selection.best_epoch, state.live(), strict=True) if ok]
        log.info(
            "stopped early after epoch %d: validation accuracy has not improved for %d "
            "epochs (trainer.patience; best epoch %s)",
            *(state.epoch, patience, ", ".join(map(str, best))),
        )


def test_evaluation(state: RunState, training: Training, data: TrainData, last) -> list:
    """The test figures, read once at the end: of the weights trainer.keep names (keep=best:
    each copy's best epoch). Without a validation split the last epoch's evaluation was
    already on the test set (`last`; None after 0 epochs or a resumed, finished run)."""
    if state.selection is not None:
        state.selection.apply(state.model)
        return training.evaluate(data.x_test, data.y_test)
    return last if last is not None else training.evaluate(data.x_test, data.y_test)


def log_epoch(state: RunState, rows: list[dict], epochs: int) -> None:
    """One line per epoch; with several seeds, the mean and spread of the live copies."""
    alive = state.live_rows(rows)
    split = "val" if "val_loss" in rows[0] else "test"
    scale = {"train_loss": 1, f"{split}_loss": 1, f"{split}_accuracy": 100}
    parts = []
    for key, k in scale.items():
        values = torch.tensor([k * row[key] for row in alive], dtype=torch.float64)
        digits = 2 if k == 100 else 4
        spread = f" ± {values.std():.{digits}f}" if len(alive) > 1 else ""
        unit = "%" if k == 100 else ""
        parts.append(f"{key} {values.mean():.{digits}f}{unit}{spread}")
    seeds = f" ({len(alive)} seeds)" if len(alive) > 1 else ""
    log.info(
        "epoch %d/%d  %s%s  %.2fs", state.epoch, epochs, "  ".join(parts), seeds, rows[0]["seconds"]
    )
