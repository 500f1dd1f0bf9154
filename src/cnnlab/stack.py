"""What a run trains: one model (SingleModel) or N seeds trained together (SeedStack), with
one interface (step, evaluate, copy, model, optimizer), so the loop treats both alike.

Seeds trained together: N copies of one model, trained in lockstep as one computation.

Copy i starts from the weights `seed=seeds[i]` alone would build, sees the batches that
seed's data generator draws, and gets exactly the update a single run makes: the losses
are summed over copies before backward, so each copy's gradient is its own loss's, and
Adam, AdamW and SGD with momentum are elementwise, so one optimiser over the stacked
parameters updates each copy as its own optimiser would.

The copies are one model whose layers hold every copy's weights ([N, ...] tensors):
  conv land  [B, N*C, H, W]: each copy's channels are one block, so a convolution with
             groups=N is N independent convolutions in one call, and the per-channel layers
             (batch norm, pooling, activations) act per copy with per-copy statistics;
  dense land [N, B, F]: a linear layer is one batched matmul.
Measured against torch.func's vmap(functional_call) over the same copies (benchmarks/
seeds.py --vmap: 2-core CPU, one thread, LeNet-5 on 20,000 Fashion-MNIST images, median
epochs): 4 seeds took 2.8x one seed's epoch this way and 5.4x with vmap, 8 seeds 5.7x and
10.5x. vmap's batching rule turns the convolution into a grouped one too, but in NCHW and
with layout copies around it; these layers keep the whole stack channels-last.

A copy that diverges stays apart: no operation mixes copies, so its NaNs reach only its own
parameters and statistics while the others train on unchanged.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from cnnlab.config import TrainerConfig
from cnnlab.engine import (
    OPTIMIZERS,
    Evaluation,
    TrainData,
    autocast,
    channels_last_pays,
    evaluate,
    make_optimizer,
)
from cnnlab.layers import Branches, LayerNorm, LocalResponseNorm
from cnnlab.models import MLP, LeNet, Residual, build_model, count_params

# ---- stacked layers ------------------------------------------------------------------------


def stacked(tensors: list[torch.Tensor | None], parameter: bool) -> torch.Tensor | None:
    if tensors[0] is None:
        return None
    t = torch.stack([t.detach() for t in tensors])
    return nn.Parameter(t, requires_grad=tensors[0].requires_grad) if parameter else t


def register_copies(module: nn.Module, n: int) -> None:
    """A layer without weights learns how many copies it sees from this buffer: running a
    part of the stack slices every parameter and buffer along the copy axis, this too."""
    module.register_buffer("copies", torch.arange(n), persistent=False)


class StackedConv(nn.Module):
    """N convolutions (1-D or 2-D) as one with groups = N x groups. weight [N, out,
    in/groups, *kernel]."""

    def __init__(self, convs: list[nn.Conv1d | nn.Conv2d], n: int):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros" or isinstance(c.padding, str):
            raise ValueError(f"stacking a conv needs padding_mode='zeros' and int padding: {c}")
        self.weight = stacked([m.weight for m in convs], parameter=True)
        self.register_parameter("bias", stacked([m.bias for m in convs], parameter=True))
        self.stride, self.padding, self.dilation, self.groups = (
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        bias = None if self.bias is None else self.bias.flatten()
        w = self.weight.flatten(0, 1)
        conv = F.conv1d if w.dim() == 3 else F.conv2d
        return conv(x, w, bias, self.stride, self.padding, self.dilation, self.groups * n)


class StackedLinear(nn.Module):
    """N linear layers as one batched matmul: [N, B, in] -> [N, B, out]."""

    def __init__(self, linears: list[nn.Linear], n: int):
        super().__init__()
        self.weight = stacked([m.weight for m in linears], parameter=True)
        self.register_parameter("bias", stacked([m.bias for m in linears], parameter=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedFlatten(nn.Module):
    """Conv land [B, N*C, H, W] -> dense land [N, B, C*H*W], each copy flattened in the
    (C, H, W) order its own model's Flatten uses."""

    def __init__(self, flattens: list[nn.Flatten], n: int):
        super().__init__()
        f = flattens[0]
        if f.start_dim != 1 or f.end_dim != -1:
            raise ValueError(f"stacking a Flatten needs start_dim=1, end_dim=-1: {f}")
        register_copies(self, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.copies)
        return x.unflatten(1, (n, -1)).transpose(0, 1).reshape(n, x.shape[0], -1)


class StackedBatchNorm(nn.Module):
    """Batch norm over N*C channels: each copy's channel is normalised over its own batch,
    and keeps its own running statistics (views of the [N, C] buffers)."""

    def __init__(self, norms: list[nn.BatchNorm1d | nn.BatchNorm2d], n: int):
        super().__init__()
        b = norms[0]
        if not b.track_running_stats or b.momentum is None:
            raise ValueError(f"stacking a batch norm needs running stats and a momentum: {b}")
        self.eps, self.momentum = b.eps, b.momentum
        self.weight = stacked([m.weight for m in norms], parameter=True)
        self.register_parameter("bias", stacked([m.bias for m in norms], parameter=True))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, stacked([getattr(m, name) for m in norms], parameter=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)  # as nn.BatchNorm counts (unused with momentum)
        return F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            None if self.weight is None else self.weight.flatten(),
            None if self.bias is None else self.bias.flatten(),
            self.training,
            self.momentum,
            self.eps,
        )


class StackedGroupNorm(nn.Module):
    """Group norm with N x groups groups: no group spans two copies."""

    def __init__(self, norms: list[nn.GroupNorm], n: int):
        super().__init__()
        if not norms[0].affine:
            raise ValueError(f"stacking a GroupNorm needs affine=True: {norms[0]}")
        self.num_groups, self.eps = norms[0].num_groups, norms[0].eps
        self.weight = stacked([m.weight for m in norms], parameter=True)
        self.register_parameter("bias", stacked([m.bias for m in norms], parameter=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        return F.group_norm(
            x, self.num_groups * n, self.weight.flatten(), self.bias.flatten(), self.eps
        )


class StackedInstanceNorm(nn.Module):
    """Instance norm is per sample and channel already; only its affine weights stack."""

    def __init__(self, norms: list[nn.InstanceNorm1d | nn.InstanceNorm2d], n: int):
        super().__init__()
        i = norms[0]
        if i.track_running_stats:
            raise ValueError(f"stacking an instance norm needs track_running_stats=False: {i}")
        self.eps = i.eps
        self.weight = stacked([m.weight for m in norms], parameter=True)
        self.register_parameter("bias", stacked([m.bias for m in norms], parameter=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.flatten()
        b = None if self.bias is None else self.bias.flatten()
        return F.instance_norm(x, weight=w, bias=b, use_input_stats=True, eps=self.eps)


class PerCopy(nn.Module):
    """A parameter-free layer that mixes channels (LRN), run on [B*N, C, H, W] so that its
    window never reaches into a neighbouring copy's channels."""

    def __init__(self, layers: list[nn.Module], n: int):
        super().__init__()
        self.layer = copy.deepcopy(layers[0])
        register_copies(self, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (b, nc, *size), n = x.shape, len(self.copies)
        y = self.layer(x.reshape(b * n, nc // n, *size)).reshape(x.shape)
        if x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y


class StackedBranches(Branches):
    """N copies of a multi-scale stage: each branch's output is grouped by copy ([B, N*c_i,
    ...]), so the concatenation goes per copy to keep the stacked layout [B, N*C, ...]."""

    def __init__(self, branches: list[Branches], n: int):
        super().__init__(copy.deepcopy(list(branches[0])))  # its convs are stacked after this
        register_copies(self, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.copies.numel()
        outs = [branch(x) for branch in self]
        per_copy = [y.unflatten(1, (n, y.shape[1] // n)) for y in outs]
        return torch.cat(per_copy, dim=2).flatten(1, 2)


# How each kind of layer becomes its stacked form. Layers that act on each element, or on
# each channel's map (activations, pooling), work on the stacked layout as they are.
STACKED: dict[type, type[nn.Module]] = {
    nn.Conv1d: StackedConv,
    nn.Conv2d: StackedConv,
    nn.Linear: StackedLinear,
    nn.Flatten: StackedFlatten,
    nn.BatchNorm1d: StackedBatchNorm,
    nn.BatchNorm2d: StackedBatchNorm,
    nn.GroupNorm: StackedGroupNorm,
    LayerNorm: StackedGroupNorm,  # a GroupNorm with one group
    nn.InstanceNorm1d: StackedInstanceNorm,
    nn.InstanceNorm2d: StackedInstanceNorm,
    LocalResponseNorm: PerCopy,
    Branches: StackedBranches,
}
AS_THEY_ARE = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.MaxPool1d, nn.MaxPool2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.Identity,
    # dropout draws one mask for the whole stack: each copy's own, but not the mask its seed
    # alone would draw, so with dropout a copy matches its single run in law, not bit for bit
    nn.Dropout,
)  # fmt: skip
# containers whose own forward only chains children, or (Residual) crops and adds maps
CONTAINERS = (nn.Sequential, Residual, MLP, LeNet)


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One module computing all `models` (same architecture, own weights) side by side.

    Its parameters and buffers have the names of a single model's, each with a leading
    copy dimension, so `{k: v[i] for k, v in stacked.state_dict().items()}` is copy i's
    ordinary state dict. Input [B, N*C, H, W] (grouped_input), output [N, B, classes].
    """
    n = len(models)
    out = copy.deepcopy(models[0])
    for name, module in list(out.named_modules()):
        kind = type(module)
        if kind in STACKED:
            parent, _, child = name.rpartition(".")
            layers = [m.get_submodule(name) for m in models]
            setattr(out.get_submodule(parent), child, STACKED[kind](layers, n))
        elif not isinstance(module, AS_THEY_ARE + CONTAINERS):
            raise TypeError(
                f"cnnlab.stack cannot stack a {kind.__name__} ({name or 'the model'}): add it "
                f"to STACKED, AS_THEY_ARE or CONTAINERS in stack.py"
            )
    return out


def grouped_input(x: torch.Tensor, n: int, memory_format=torch.contiguous_format) -> torch.Tensor:
    """One batch [B, C, *size] shown to every copy -> [B, N*C, *size], the stack's input."""
    x = x.repeat(1, n, *[1] * (x.dim() - 2))
    return x.contiguous(memory_format=memory_format)


def stack_channels_last(model: nn.Module, device: torch.device) -> bool:
    """On CPU, oneDNN's grouped convolutions in NHWC: 4 stacked LeNet-5 copies stepped
    1.9x faster than in NCHW, 8 copies 1.9x too, and 2.0x with batch norm, which a single
    model keeps in NCHW (2-core CPU, one thread, interleaved). CUDA is left in NCHW, as a
    single model is, until measured there."""
    convs = [m for m in model.modules() if isinstance(m, StackedConv)]
    return device.type == "cpu" and any(m.weight.dim() == 5 for m in convs)  # 2-D convs


def part_size(n: int, device: torch.device) -> int:
    """How many copies one forward and backward runs; a step runs the parts one after the
    other, then one optimiser step. On the 2-core CPU (one thread, steps interleaved, under
    other work), 8 copies in one part cost 7.4x one model's step for LeNet-5, 10.0x for
    LeNet-5 width 2 and 7.1-10.6x for the MLP; in two parts of 4: 5.1x, 7.2x, 7.1x (parts
    of 2: 6.0x, 7.1x, 8.3x): past 4 copies the activations outgrow the cache. A GPU gains
    from the biggest kernels, so it runs all copies at once."""
    return 4 if device.type == "cpu" else n


# ---- one model, and the stack ------------------------------------------------------------


class SingleModel:
    """One seed's model and its optimiser, with SeedStack's interface: step(idx) takes the
    batch indices [1, B] into x_train/y_train and returns the loss [1] (on the device, no
    host sync; it can be captured in a CUDA graph), evaluate(x, y) a list of one Evaluation,
    copy(0) the model itself. The caller's tensors stay as they are: where NHWC pays
    (engine.channels_last_pays) each batch is laid out so as it is gathered, as a stack's
    is, instead of a second, NHWC copy of the data (no copy at all for one channel)."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        trainer_cfg: TrainerConfig,
        data: TrainData,
        graph: bool = False,
        compiled: bool = False,
    ):
        self.device, self.n = device, 1
        self.model = model.to(device)
        nhwc = channels_last_pays(self.model, device)
        self.memory_format = torch.channels_last if nhwc else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)  # in place, before the optimiser
        self.x_train, self.y_train = data.x_train, data.y_train
        self.optimizer = make_optimizer(self.model, trainer_cfg, device, graph)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.autocast = autocast(trainer_cfg, device)
        self.eval_batch_size = trainer_cfg.eval_batch_size

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        x = self.x_train[idx[0]].contiguous(memory_format=self.memory_format)
        with self.autocast:
            loss = F.cross_entropy(self.forward(x), self.y_train[idx[0]])
        loss.backward()
        self.optimizer.step()
        return loss.detach().reshape(1)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[1, B, classes] for a batch [B, C, H, W], in the mode the model is in."""
        with self.autocast:
            return self.model(x.contiguous(memory_format=self.memory_format)).float()[None]

    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
    ) -> list[Evaluation]:
        """[the model's Evaluation on (x, y)], in eval mode, batch_size images at a time
        (default trainer.eval_batch_size)."""
        return evaluate(self.model, self.logits, x, y, batch_size or self.eval_batch_size)

    def copy(self, i: int) -> nn.Module:
        """The model itself: one seed has no other copy to take out."""
        return self.model


class SeedStack:
    """N copies of one model (each built as its seed alone builds it) and their optimiser,
    stepped together on the resident training data.

    step(idx) takes each copy's batch indices into x_train/y_train ([N, B]) and returns the
    copies' losses ([N], on the device, no host sync): it can be captured in a CUDA graph.
    """

    def __init__(
        self,
        models: list[nn.Module],
        device: torch.device,
        trainer_cfg: TrainerConfig,
        data: TrainData,
        graph: bool = False,
    ):
        self.device, self.n = device, len(models)  # n copies
        self.template = copy.deepcopy(models[0])  # the architecture, for copy(i)
        self.model = stack_models(models).to(device)
        size = part_size(self.n, device)
        self.parts = [slice(i, min(i + size, self.n)) for i in range(0, self.n, size)]
        self.tensors = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        self.memory_format = (
            torch.channels_last
            if stack_channels_last(self.model, device)
            else torch.contiguous_format
        )
        self.x_train, self.y_train = data.x_train, data.y_train
        self.optimizer = make_optimizer(self.model, trainer_cfg, device, graph)
        self.autocast = autocast(trainer_cfg, device)  # bf16 where trainer.precision asks
        self.eval_batch_size = trainer_cfg.eval_batch_size
        self.model.train()

    def forward(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        """The copies in `part` on their grouped input [B, n*C, H, W]: every parameter and
        buffer sliced along the copy axis (views: gradients and batch-norm statistics reach
        the stack's own tensors)."""
        if part == slice(0, self.n):
            return self.model(x)
        return functional_call(self.model, {k: v[part] for k, v in self.tensors.items()}, (x,))

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One update of every copy; idx [N, B] (B may be an epoch's short last batch)."""
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for part in self.parts:
            copies = idx[part]
            # [B, n, C, H, W] -> [B, n*C, H, W]: the gather writes the stacked layout directly
            x = self.x_train[copies.t()].flatten(1, 2).contiguous(memory_format=self.memory_format)
            with self.autocast:  # as SingleModel's step: the loss inside autocast too
                loss = F.cross_entropy(
                    self.forward(x, part).flatten(0, 1),
                    self.y_train[copies].flatten(),
                    reduction="none",
                )
            loss = loss.view(copies.shape).mean(1)  # each copy's mean over its batch
            loss.sum().backward()  # the sum: each copy's gradient is its own loss's
            losses.append(loss.detach())
        self.optimizer.step()
        return torch.cat(losses)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, B, classes] for a batch [B, C, H, W] shown to every copy (or [N, B, C, H, W]),
        in the mode the model is in."""
        with self.autocast:
            return self.model(grouped_input(x, self.n, self.memory_format)).float()

    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
    ) -> list[Evaluation]:
        """Each copy's Evaluation on (x, y), in eval mode, as one model alone gets it.

        batch_size (default trainer.eval_batch_size) counts images times copies
        (batch_size / N images per forward), so the memory evaluation takes does not grow
        with the stack."""
        batch_size = max(1, (batch_size or self.eval_batch_size) // self.n)
        return evaluate(self.model, self.logits, x, y, batch_size, copies=self.n)

    # -- state ---------------------------------------------------------------------------

    def copy_state_dict(self, i: int) -> dict:
        """Copy i's ordinary model state dict (cloned: it does not follow the stack)."""
        return {k: v[i].clone() for k, v in self.model.state_dict().items()}

    def copy(self, i: int) -> nn.Module:
        """Copy i as an ordinary model on the stack's device, in eval mode."""
        model = copy.deepcopy(self.template).to(self.device)
        model.load_state_dict(self.copy_state_dict(i))
        return model.eval()


# ---- memory ----------------------------------------------------------------------------------


def estimate_bytes(
    model_cfg,
    input_shape: tuple[int, int, int],
    n_classes: int,
    n_seeds: int,
    trainer_cfg: TrainerConfig,
) -> int:
    """Rough peak memory of training a stack of `n_seeds`, the resident data not included.

    Per copy: parameters, gradients and optimiser state (Adam: two moments; float32), and
    a training batch's activations: every layer's output, kept for backward, and as much
    again for the gradients in flight. Evaluation shows eval_batch_size / n_seeds images to
    every copy at once, so its activations (a few layers' outputs at a time) do not grow with
    the stack. bf16 would halve the activations; this does not count on it.
    """
    with torch.device("meta"):  # shapes only: no memory, no random draws
        model = build_model(model_cfg, input_shape, n_classes)
        sizes = [math.prod(input_shape)]
        hooks = [
            m.register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
            for m in model.modules()
            if not list(m.children())
        ]
        model(torch.empty(1, *input_shape))
    for h in hooks:
        h.remove()
    states = OPTIMIZERS[trainer_cfg.optimizer].states
    weights = (2 + states) * count_params(model)  # parameter, gradient, optimiser state
    train = 2 * trainer_cfg.batch_size * sum(sizes)
    evaluation = 3 * trainer_cfg.eval_batch_size * max(sizes)
    return 4 * (n_seeds * (weights + train) + evaluation)
