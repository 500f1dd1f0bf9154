"""The pieces every way of training shares, one model or a stack of seeds (stack.py): the
optimisers, with the state each keeps per parameter; autocast; the CUDA-graph step; the one
evaluation loop; where the tensors live and which path a step takes.

Where the speed comes from (figures in the README): the data already sit on the device
(cnnlab.data) and an epoch is a seeded on-device permutation cut into slices (loop.py); on CUDA
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

from cnnlab.config import Optimizer, TrainerConfig
from cnnlab.outcome import ConfigError

# Each optimiser's settings as torch.optim keeps them in a parameter group (lr aside), so that
# a state_dict of either kind loads into the other: checkpoints written before the CPU's own
# optimisers, and those written on CUDA, resume on the CPU and back.
ADAM = {
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}
ADAMW = {**ADAM, "weight_decay": 1e-2, "decoupled_weight_decay": True}
SGD = {
    "momentum": 0.9,
    "dampening": 0,
    "weight_decay": 0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}
ADAM_MATH = ("amsgrad", "betas", "decoupled_weight_decay", "eps", "maximize", "weight_decay")
SGD_MATH = ("dampening", "maximize", "momentum", "nesterov", "weight_decay")


@dataclass(frozen=True)
class OptimizerKind:
    """How to make an optimiser: torch.optim's class and its settings, and how many
    parameter-sized float32 tensors of state it keeps per parameter (what a memory estimate
    counts)."""

    name: str
    settings: dict
    states: int
    math: tuple[str, ...]  # the settings the update computes with: a resume must keep them

    @property
    def torch_class(self) -> type[torch.optim.Optimizer]:
        return getattr(torch.optim, self.name)


OPTIMIZERS: dict[Optimizer, OptimizerKind] = {
    Optimizer.adam: OptimizerKind("Adam", ADAM, 2, ADAM_MATH),  # two moments
    Optimizer.adamw: OptimizerKind("AdamW", ADAMW, 2, ADAM_MATH),
    Optimizer.sgd: OptimizerKind("SGD", SGD, 1, SGD_MATH),  # the momentum buffer
}


class CpuOptimizer:
    """Adam and AdamW (torch's fused CPU kernels) or SGD with momentum, the very update
    torch.optim's makes (bitwise, tests/test_engine.py), its state_dict in torch.optim's
    format. Why not torch.optim itself: its constructor and every step() import torch._dynamo
    (1.7 s of CPU, more than the rest of a run's start-up beyond `import torch`), which an
    eager run never uses."""

    def __init__(self, params, kind: OptimizerKind, lr: float):
        self.kind = kind
        self.param_groups = [{"params": list(params), "lr": lr, **kind.settings}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if self.kind.name == "SGD":
            self._sgd(group, params)
        else:
            self._adam(group, params)

    def _adam(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            if p not in self.state:  # as torch.optim.Adam(fused=True) starts a parameter
                self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        by_kind: dict[tuple, list[torch.Tensor]] = {}  # one fused call per device and dtype
        for p in params:
            by_kind.setdefault((p.device, p.dtype), []).append(p)
        update = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        for same in by_kind.values():
            states = [self.state[p] for p in same]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            update(
                same,
                [p.grad for p in same],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=group["betas"][0],
                beta2=group["betas"][1],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def _sgd(self, group: dict, params: list[torch.Tensor]) -> None:
        momentum, dampening = group["momentum"], group["dampening"]
        for p in params:  # as torch.optim.SGD updates one CPU tensor at a time
            buf = self.state.setdefault(p, {}).get("momentum_buffer")
            if buf is None:
                buf = self.state[p]["momentum_buffer"] = p.grad.detach().clone()
            else:
                buf.mul_(momentum).add_(p.grad, alpha=1 - dampening)
            p.add_(buf, alpha=-group["lr"])

    def state_dict(self) -> dict:
        """As torch.optim writes it: state by parameter index, the group with indices."""
        group = self.param_groups[0]
        index = {p: i for i, p in enumerate(group["params"])}
        return {
            "state": {index[p]: dict(s) for p, s in self.state.items()},
            "param_groups": [{**group, "params": list(range(len(group["params"])))}],
        }

    def load_state_dict(self, saved: dict) -> None:
        """A state_dict of this optimiser or of torch.optim's same kind (settings that enter
        the update must agree); the tensors go to each parameter's device and dtype."""
        group = self.param_groups[0]
        groups = saved.get("param_groups", [])
        differ = [
            f"{k}={g.get(k)!r} (this optimiser: {group[k]!r})"
            for g in groups[:1]
            for k in self.kind.math
            if g.get(k) != group[k]
        ]
        sizes = [len(g["params"]) for g in groups]
        if sizes != [len(group["params"])] or differ:
            raise ValueError(
                f"the checkpoint's optimiser state does not fit {self.kind.name} with "
                f"{len(group['params'])} parameters in one group: "
                + (", ".join(differ) or f"it has groups of {sizes} parameters")
            )
        params = group["params"]
        self.state = {  # copies: a state_dict's tensors are the optimiser's own
            params[int(i)]: {k: cast(v, params[int(i)], k) for k, v in s.items()}
            for i, s in saved["state"].items()
        }
        group["lr"] = groups[0]["lr"]


def cast(value: torch.Tensor, param: torch.Tensor, key: str) -> torch.Tensor:
    """A saved state tensor as the update uses it: on the parameter's device, the step
    count in float32 (as fused Adam keeps it), the rest in the parameter's dtype."""
    dtype = torch.float32 if key == "step" else param.dtype
    return value.to(dtype=dtype, device=param.device, copy=True)


def make_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device, graph: bool):
    kind = OPTIMIZERS[cfg.optimizer]
    if device.type == "cpu":
        return CpuOptimizer(model.parameters(), kind, cfg.lr)
    # fused: one kernel for the whole update instead of about ten per parameter (on the
    # 2-core CPU, batch 64: MLP 1.23x, LeNet-5 1.03-1.17x faster; the same update to float
    # rounding). capturable: the step count stays on the GPU, which graph capture needs.
    if kind.name == "SGD":
        return kind.torch_class(model.parameters(), lr=cfg.lr, momentum=SGD["momentum"])
    return kind.torch_class(model.parameters(), lr=cfg.lr, fused=True, capturable=graph)


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
        out = logits(x[i : i + batch_size])
        yb = y[i : i + batch_size]
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
