"""The pieces every way of training shares, one model (loop.py) or a stack of seeds
(stack.py): the optimisers, with the state each keeps per parameter; autocast; the CUDA-graph
step; the one evaluation loop; where the tensors live and which path a step takes.

Where the speed comes from (figures in the README): the data already sit on the device
(data.py) and an epoch is a seeded on-device permutation cut into slices (loop.py); on CUDA
the whole step (batch gather, forward, backward, Adam) is captured once and replayed as a
CUDA graph, which removes the per-kernel launch cost that dominates a model as small as
LeNet-5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import ConfigError, Optimizer, TrainerConfig


@dataclass(frozen=True)
class OptimizerKind:
    """How to make an optimiser, and how many parameter-sized float32 tensors of state it
    keeps per parameter (what a memory estimate counts)."""

    cls: type[torch.optim.Optimizer]
    states: int


OPTIMIZERS: dict[Optimizer, OptimizerKind] = {
    Optimizer.adam: OptimizerKind(torch.optim.Adam, states=2),  # two moments
    Optimizer.adamw: OptimizerKind(torch.optim.AdamW, states=2),
    Optimizer.sgd: OptimizerKind(torch.optim.SGD, states=1),  # the momentum buffer
}


def make_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device, graph: bool):
    cls = OPTIMIZERS[cfg.optimizer].cls
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
    """The normalised training, test and validation tensors, already on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None  # None: no validation split (data.val_fraction=0)
    y_val: torch.Tensor | None = None

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # on the CPU
    confidence: torch.Tensor  # softmax probability of the predicted class


@torch.no_grad()
def evaluate(
    model: nn.Module,
    logits: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    copies: int = 1,
) -> list[Evaluation]:
    """Each copy's Evaluation on (x, y), `model` in eval mode meanwhile: `logits(batch)`
    gives [copies, B, classes] in float32. Each copy's loss is summed as one model's is, so a
    copy of a stack is evaluated as the same model alone."""
    model.eval()
    total_loss = torch.zeros(copies, device=x.device)
    preds, confs = [], []
    for i in range(0, len(x), batch_size):
        out, yb = logits(x[i : i + batch_size]), y[i : i + batch_size]
        total_loss += torch.stack([F.cross_entropy(o, yb, reduction="sum") for o in out])
        conf, pred = out.softmax(-1).max(-1)
        preds.append(pred)
        confs.append(conf)
    model.train()
    predictions, confidence = torch.cat(preds, 1).cpu(), torch.cat(confs, 1).cpu()
    count = max(1, len(y))
    correct = (predictions == y.cpu()).sum(1).tolist()
    return [
        Evaluation(loss / count, right / count, predictions[i], confidence[i])
        for i, (loss, right) in enumerate(zip(total_loss.tolist(), correct, strict=True))
    ]


def evaluate_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainerConfig
) -> Evaluation:
    """One model on (x, y): the validation or the test data, as a run evaluates it."""
    amp = autocast(cfg, x.device)

    def logits(batch: torch.Tensor) -> torch.Tensor:
        with amp:
            return model(batch).float().unsqueeze(0)

    return evaluate(model, logits, x, y, cfg.eval_batch_size)[0]
