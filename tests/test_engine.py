"""The CPU's own optimisers (engine.CpuOptimizer): the very update torch.optim makes, bit
for bit over many steps, the same state_dict both ways, and no torch._dynamo imported
(torch.optim imports it in its constructor and every step: 1.7 s of a run's start).

The training fast paths give the results of a plain eager loop, and the benchmark runs.

The plain loop here is the reference: the model built after the same seed, the same
on-device permutation (a generator seeded the same way), plain Adam, one step per slice.
A fast path may round differently (fused Adam, another memory layout, a CUDA graph), so
the per-step losses are compared to a float tolerance over a few dozen steps; over many
steps such rounding differences grow chaotically, which is no sign of a different method.
GPU tests carry the `gpu` mark and skip cleanly without CUDA."""

import copy
import dataclasses
import io
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU, compiler_modules_after, cuda
from torch import nn

from cnnlab import data
from cnnlab.config import LeNetConfig, MLPConfig, Optimizer, SyntheticDataConfig, TrainerConfig
from cnnlab.engine import OPTIMIZERS, CpuOptimizer, TrainData, make_optimizer
from cnnlab.loop import StopRequest, fit, start_run
from cnnlab.models import build_model


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


SEED = 0


DATA = SyntheticDataConfig(train_size=320, test_size=128)  # 5 steps of 64 per epoch


MODELS = {"mlp": MLPConfig, "lenet5": LeNetConfig}


@pytest.fixture(scope="module")
def dataset():
    return data.load(DATA)


def model_for(name: str, device) -> torch.nn.Module:
    torch.manual_seed(SEED)
    shape, classes = data.spec(DATA)
    return build_model(MODELS[name](), shape, len(classes)).to(device)


def plain_eager_losses(name, ds, device, epochs, batch_size=64) -> torch.Tensor:
    model = model_for(name, device)
    x = data.to_device(ds.x_train, device, DATA.normalize)
    y = ds.y_train.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator(device=device).manual_seed(SEED)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device, generator=generator)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return torch.stack(losses).cpu()


def trained(name, ds, device, epochs, checkpoint=None, seeds=(SEED,), **trainer_kw):
    """fit() from a fresh start (or `checkpoint`), keeping every step's loss as the run
    computes it, whatever its path. Returns (losses, state, path); losses [steps, seeds]
    when several seeds train together, else [steps]."""
    cfg = TrainerConfig(epochs=epochs, progress=False, checkpoint=False, log_every=3, **trainer_kw)
    tensors = TrainData(
        data.to_device(ds.x_train, device, DATA.normalize),
        ds.y_train.to(device),
        data.to_device(ds.x_test, device, DATA.normalize),
        ds.y_test.to(device),
    )
    shape, classes = tuple(ds.x_train.shape[1:]), len(ds.classes)

    def build(seed):
        torch.manual_seed(seed)
        return build_model(MODELS[name](), shape, classes).to(device)

    state, engine = start_run(build, list(seeds), tensors, cfg, device)
    if checkpoint is not None:
        state.load_state_dict(checkpoint, cfg.lr)
    losses, step = [], engine.step

    def recording_step(idx):
        loss = step(idx)
        losses.append(loss.clone())  # a CUDA graph overwrites its output at the next replay
        return loss

    engine = dataclasses.replace(engine, step=recording_step)
    outcome, _ = fit(state, engine, tensors, cfg, StopRequest())
    assert outcome.status == "completed"
    got = torch.stack(losses).float().cpu()
    return (got[:, 0] if len(seeds) == 1 else got), state, engine.path


def through_a_file(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


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


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_cpu_trainer_matches_a_plain_eager_loop(dataset, name):
    device = torch.device("cpu")
    expected = plain_eager_losses(name, dataset, device, epochs=4)
    got, state, path = trained(name, dataset, device, epochs=4)
    assert path == "eager"
    assert len(got) == len(expected) == 20
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the epoch means the history reports are the same losses
    means = [row["train_loss"] for row in state.history]  # one seed: a row per epoch
    torch.testing.assert_close(
        torch.tensor(means), expected.view(4, 5).mean(1), rtol=1e-4, atol=1e-5
    )


def test_same_seed_same_path_gives_identical_losses(dataset):
    first, _, _ = trained("lenet5", dataset, torch.device("cpu"), epochs=2)
    second, _, _ = trained("lenet5", dataset, torch.device("cpu"), epochs=2)
    assert torch.equal(first, second)


def test_resume_from_a_checkpoint_with_another_memory_layout(dataset):
    """Fused Adam reads its state in the parameters' memory order: a checkpoint saved with
    NCHW state (as on CUDA) must resume a channels_last CPU run exactly like its own."""
    device = torch.device("cpu")
    _, first, _ = trained("lenet5", dataset, device, epochs=1)
    conv2 = [m for m in first.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv2.weight.is_contiguous(memory_format=torch.channels_last)  # CPU fast layout
    assert not conv2.weight.is_contiguous()
    saved = through_a_file(first.state_dict())
    as_if_cuda = through_a_file(first.state_dict())
    as_if_cuda["optimizer"]["state"] = {
        i: {k: v.contiguous() for k, v in s.items()}
        for i, s in as_if_cuda["optimizer"]["state"].items()
    }

    def resumed(checkpoint):
        return trained("lenet5", dataset, device, epochs=2, checkpoint=checkpoint)[0]

    torch.testing.assert_close(resumed(as_if_cuda), resumed(saved), rtol=0, atol=0)


def test_run_names_its_path_in_the_log_and_metrics(tmp_path, run_main):
    result = run_main(
        tmp_path,
        "train",
        "model=mlp",
        "data=synthetic",
        "trainer.epochs=1",
        "device=cpu",
        "trainer.progress=false",
        "hydra.run.dir=run",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["path"] == "eager"
    assert "training path: eager" in (tmp_path / "run" / "train.log").read_text()


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_cuda_graph_path_matches_a_plain_eager_loop(dataset, name):
    device = torch.device("cuda")
    expected = plain_eager_losses(name, dataset, device, epochs=4)
    got, _, path = trained(name, dataset, device, epochs=4, cuda_graph="auto")
    assert path == "cuda_graph"  # auto picks the graph on CUDA with Adam
    # cuDNN may pick other convolution algorithms in and out of a graph: a looser tolerance
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


@cuda
@pytest.mark.gpu
def test_cuda_graph_and_eager_trainer_agree(dataset):
    device = torch.device("cuda")
    graph, _, graph_path = trained("lenet5", dataset, device, epochs=3, cuda_graph="auto")
    eager, _, eager_path = trained("lenet5", dataset, device, epochs=3, cuda_graph="false")
    assert (graph_path, eager_path) == ("cuda_graph", "eager")
    torch.testing.assert_close(graph, eager, rtol=1e-3, atol=1e-3)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", ["auto", "false"])
def test_bf16_trains(dataset, cuda_graph):
    device = torch.device("cuda")
    got, _, path = trained(
        "lenet5", dataset, device, epochs=3, precision="bf16", cuda_graph=cuda_graph
    )
    assert torch.isfinite(got).all()
    expected = plain_eager_losses("lenet5", dataset, device, epochs=3)
    # bf16 keeps about 3 significant digits: the same curve, loosely
    torch.testing.assert_close(got, expected, rtol=5e-2, atol=5e-2)
    assert path == ("cuda_graph" if cuda_graph == "auto" else "eager")


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_seeds_together_on_the_cuda_graph_path_match_each_single_run(dataset, name):
    device = torch.device("cuda")
    stacked, _, path = trained(name, dataset, device, epochs=3, seeds=(0, 1, 2))
    assert path == "cuda_graph" and stacked.shape == (15, 3)
    for i, seed in enumerate((0, 1, 2)):
        single, _, _ = trained(name, dataset, device, epochs=3, seeds=(seed,), cuda_graph="false")
        torch.testing.assert_close(stacked[:, i], single, rtol=1e-3, atol=1e-3)


@cuda
@pytest.mark.gpu
def test_seeds_together_in_bf16_train(dataset):
    got, _, path = trained(
        "lenet5", dataset, torch.device("cuda"), 3, seeds=(0, 1), precision="bf16"
    )
    assert path == "cuda_graph" and torch.isfinite(got).all()
    assert (got[-1] < got[0]).all()  # each copy learns


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_series_train_on_the_cuda_graph_path(seeds):
    """1-D data (channels, length) take the same fast path as images."""
    series = data.load(SyntheticDataConfig(shape=[1, 96], train_size=320, test_size=64))
    device = torch.device("cuda")
    graph, _, path = trained("lenet5", series, device, 3, seeds=seeds)
    eager, _, _ = trained("lenet5", series, device, 3, seeds=seeds, cuda_graph="false")
    assert path == "cuda_graph"
    torch.testing.assert_close(graph, eager, rtol=1e-3, atol=1e-3)
