"""The CPU's own optimisers (engine.CpuOptimizer): the very update torch.optim makes, bit
for bit over many steps, the same state_dict both ways, and no torch._dynamo imported
(torch.optim imports it in its constructor and every step: 1.7 s of a run's start)."""

import copy

import pytest
import torch
from conftest import compiler_modules_after
from torch import nn

from cnnlab.config import Optimizer, TrainerConfig
from cnnlab.engine import OPTIMIZERS, CpuOptimizer, make_optimizer

CPU = torch.device("cpu")


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.Linear(10, 3)
    )
    return net.to(memory_format=torch.channels_last)  # as a CPU run lays out a conv net


def reference(net: nn.Module, optimizer: Optimizer, lr: float):
    """torch.optim's optimiser as a CPU run made it before (fused Adam and AdamW)."""
    kind = OPTIMIZERS[optimizer]
    if kind.name == "SGD":
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    return kind.torch_class(net.parameters(), lr=lr, fused=True)


def train(net: nn.Module, optimizer, steps: int, seed: int = 1) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=generator)
        y = torch.randint(0, 3, (8,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def same(a: dict, b: dict) -> bool:
    """Two state_dicts equal bit for bit: groups and every tensor."""
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(
        s.keys() == b["state"][i].keys()
        and all(
            torch.equal(v, b["state"][i][k]) and v.dtype == b["state"][i][k].dtype
            for k, v in s.items()
        )
        for i, s in a["state"].items()
    )


@pytest.mark.parametrize("optimizer", list(Optimizer))
@pytest.mark.parametrize("lr", [1e-3, 0.05])
def test_the_same_update_as_torch_optim_bit_for_bit(optimizer, lr):
    ours, theirs = model(), model()
    ours_opt = make_optimizer(ours, TrainerConfig(optimizer=optimizer, lr=lr), CPU, graph=False)
    assert isinstance(ours_opt, CpuOptimizer)
    theirs_opt = reference(theirs, optimizer, lr)
    assert train(ours, ours_opt, 60) == train(theirs, theirs_opt, 60)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert same(ours_opt.state_dict(), theirs_opt.state_dict())


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_state_dicts_load_both_ways_and_resume_exactly(optimizer):
    """torch.optim's state (a checkpoint written before, or on CUDA) resumes here, and
    ours in torch.optim, each going on exactly as the uninterrupted run."""
    cfg = TrainerConfig(optimizer=optimizer, lr=0.01)
    whole = model()
    whole_opt = make_optimizer(whole, cfg, CPU, graph=False)
    expected = train(whole, whole_opt, 10) + train(whole, whole_opt, 10, seed=2)

    first = model()
    first_opt = reference(first, optimizer, 0.01)
    losses = train(first, first_opt, 10)
    second = model(seed=5)
    second.load_state_dict(first.state_dict())
    second_opt = make_optimizer(second, cfg, CPU, graph=False)
    second_opt.load_state_dict(first_opt.state_dict())
    assert losses + train(second, second_opt, 10, seed=2) == expected

    third = model(seed=6)
    third.load_state_dict(whole.state_dict())
    third_opt = reference(third, optimizer, 0.01)
    third_opt.load_state_dict(copy.deepcopy(whole_opt.state_dict()))  # torch's shares tensors
    fourth = model(seed=7)
    fourth.load_state_dict(whole.state_dict())
    fourth_opt = make_optimizer(fourth, cfg, CPU, graph=False)
    fourth_opt.load_state_dict(whole_opt.state_dict())
    assert train(third, third_opt, 5, seed=3) == train(fourth, fourth_opt, 5, seed=3)


def test_a_state_of_another_kind_is_refused_in_one_line():
    adam, sgd = model(), model()
    adam_opt = reference(adam, Optimizer.adam, 0.01)
    train(adam, adam_opt, 2)
    sgd_opt = make_optimizer(sgd, TrainerConfig(optimizer="sgd"), CPU, graph=False)
    with pytest.raises(ValueError, match="does not fit SGD") as refused:
        sgd_opt.load_state_dict(adam_opt.state_dict())
    assert "\n" not in str(refused.value)
    adamw_opt = make_optimizer(model(), TrainerConfig(optimizer="adamw"), CPU, graph=False)
    with pytest.raises(ValueError, match="decoupled_weight_decay=False"):
        adamw_opt.load_state_dict(adam_opt.state_dict())
    small = make_optimizer(nn.Linear(2, 2), TrainerConfig(), CPU, graph=False)
    with pytest.raises(ValueError, match=r"2 parameters in one group: it has groups of \[6\]"):
        small.load_state_dict(adam_opt.state_dict())


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_training_steps_import_no_compiler(tmp_path, run_cli, optimizer):
    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from cnnlab.config import TrainerConfig\n"
        "from cnnlab.engine import make_optimizer\n"
        "net = nn.Linear(3, 2)\n"
        f"opt = make_optimizer(net, TrainerConfig(optimizer='{optimizer}'), "
        "torch.device('cpu'), graph=False)\n"
        "for _ in range(2):\n"
        "    opt.zero_grad()\n"
        "    net(torch.ones(4, 3)).sum().backward()\n"
        "    opt.step()\n"
        "opt.load_state_dict(opt.state_dict())\n"
    )
    assert compiler_modules_after(run_cli, tmp_path, script) == []
