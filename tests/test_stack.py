"""Seeds trained together (cnnlab.stack): copy i of a stack is the run `seed=seeds[i]`.

Seeds trained together (issue 14), through the real command: copy s of a `seeds=N` run
is the run `seed=s`, and the run folder, resume, divergence and compare know the copies."""

import io
import json
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU, SMALL, cnnlab_train, cuda, history_of, metrics_of, patch_steps
from torch import nn

from cnnlab import data
from cnnlab import stack as stack_module
from cnnlab.checkpoints import load_checkpoint
from cnnlab.compare import compare_command
from cnnlab.config import LeNetConfig, MLPConfig, SyntheticDataConfig, TrainerConfig
from cnnlab.devices import seed_everything
from cnnlab.engine import TrainData, make_optimizer
from cnnlab.models import build_model, count_params
from cnnlab.stack import SeedStack, estimate_bytes, stack_models

SHAPE, CLASSES, BS = (1, 28, 28), 10, 64


SEEDS = [3, 4, 5]


# 600 images: 9 batches of 64 and a short one of 24, so 12 steps cross into a second epoch
DATA = data.load(SyntheticDataConfig(train_size=600, test_size=200))


X_TRAIN = data.to_device(DATA.x_train, CPU, [0.5, 0.5])


X_TEST = data.to_device(DATA.x_test, CPU, [0.5, 0.5])


Y_TRAIN, Y_TEST = DATA.y_train, DATA.y_test


MODELS = {
    "lenet5": LeNetConfig(),
    "mlp": MLPConfig(),
    "lenet5_batch_norm": LeNetConfig(norm="batch"),
    "group_norm": LeNetConfig(channels=[4, 8], norm="group"),
    "instance_norm": LeNetConfig(channels=[4, 8], norm="instance", activation="leaky_relu"),
    "lrn": LeNetConfig(channels=[4, 8], norm="lrn", pool="avg"),
    "residual_bottleneck_factorized": LeNetConfig(
        channels=[4, 8],
        padding="same",
        depth=2,
        residual=True,
        bottleneck=3,
        factorize=True,
        activation="gelu",
        norm="layer",
        stride=2,
        pool="none",
    ),
}


def data_generators(seeds, device):
    """Each copy's data-order generator, seeded as a single run's."""
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def epoch_permutations(generators, n, device):
    return torch.stack([torch.randperm(n, device=device, generator=g) for g in generators])


def seeded(model_cfg, seed, shape=SHAPE):
    """The model `seed=seed` alone builds."""
    seed_everything(seed)
    return build_model(model_cfg, shape, CLASSES)


def batches(generators, steps, device=CPU):
    """Each step's [N, B] indices, drawn epoch by epoch as single runs draw them."""
    n, out = len(X_TRAIN), []
    while len(out) < steps:
        perms = epoch_permutations(generators, n, device)
        out += [perms[:, j : j + BS] for j in range(0, n, BS)]
    return out[:steps]


def single_run(model_cfg, seed, steps, cfg, x_train=X_TRAIN):
    """What `seed=seed` alone does: its model, its data order, cnnlab's optimiser."""
    seed_everything(seed)
    model = build_model(model_cfg, SHAPE, CLASSES)
    optimizer = make_optimizer(model, cfg, CPU, graph=False)
    losses = []
    for idx in batches(data_generators([seed], CPU), steps):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_train[idx[0]]), Y_TRAIN[idx[0]])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses), model


def make_stack(model_cfg, cfg, seeds=SEEDS, x_train=X_TRAIN, device=CPU):
    models = [seeded(model_cfg, s) for s in seeds]
    tensors = TrainData(x_train, Y_TRAIN.to(device), X_TEST.to(device), Y_TEST.to(device))
    return SeedStack(models, device, cfg, tensors)


def train_stack(stack, steps, seeds=SEEDS):
    idx = batches(data_generators(seeds, stack.device), steps, stack.device)
    return torch.stack([stack.step(i) for i in idx])


@pytest.fixture
def float64():
    """Exact arithmetic, near enough: float32 rounding differs between the stacked and the
    single kernels, and Adam divides by the root of tiny second moments, which can grow a
    last-bit difference to 1e-4 in ten steps; in float64 any difference in the math shows."""
    torch.set_default_dtype(torch.float64)
    yield X_TRAIN.double()
    torch.set_default_dtype(torch.float32)


@pytest.fixture
def cudnn_deterministic():
    """As `cnnlab train` runs cuDNN, so two stacks can be compared bit for bit."""
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = saved


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A seeds=3 run and the three single runs it stands for (LeNet-5 with batch norm,
    synthetic data, 8 steps an epoch, 2 epochs)."""
    root = tmp_path_factory.mktemp("seeds")
    common = ["model=lenet5", "model.norm=batch", *SMALL, "trainer.epochs=2"]
    assert cnnlab_train(root / "stack", *common, "seed=5", "seeds=3") == 0
    for seed in (5, 6, 7):
        assert cnnlab_train(root / f"single{seed}", *common, f"seed={seed}") == 0
    return root


# the two knobs slowest in float64 on the CPU (20-50 s each) run with the slow tests
HEAVY = ("lrn", "residual_bottleneck_factorized")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODELS]
)
def test_each_copy_is_its_seeds_single_run(name, float64, monkeypatch):
    # in parts of 2 copies (seeds 3, 4 | 5): a part runs on slices of the stacked tensors
    monkeypatch.setattr(stack_module, "part_size", lambda n, device: 2)
    cfg = TrainerConfig(progress=False)
    stack = make_stack(MODELS[name], cfg, x_train=float64)
    assert stack.parts == [slice(0, 2), slice(2, 3)]
    losses = train_stack(stack, 12)  # [steps, N]
    assert losses.shape == (12, len(SEEDS)) and losses.dtype == torch.float64
    for i, seed in enumerate(SEEDS):
        single_losses, model = single_run(MODELS[name], seed, 12, cfg, x_train=float64)
        torch.testing.assert_close(losses[:, i], single_losses, rtol=0, atol=1e-12)
        # weights and batch-norm statistics too, not only the losses
        torch.testing.assert_close(stack.copy_state_dict(i), model.state_dict(), rtol=0, atol=1e-12)
    assert len({round(float(v), 4) for v in losses[-1]}) == len(SEEDS)  # copies differ


@pytest.mark.parametrize("name", ["lenet5", "mlp", "lenet5_batch_norm"])
def test_float32_copies_match_single_runs_to_rounding(name):
    """The float32 path cnnlab trains with (channels-last grouped convolutions on CPU)."""
    cfg = TrainerConfig(progress=False)
    stack = make_stack(MODELS[name], cfg)
    assert stack.parts == [slice(0, 3)]  # the three copies at once
    # channels-last grouped convolutions: twice as fast as NCHW on CPU
    assert (stack.memory_format == torch.channels_last) == (name != "mlp")
    losses = train_stack(stack, 12)
    for i, seed in enumerate(SEEDS):
        single_losses = single_run(MODELS[name], seed, 12, cfg)[0]
        torch.testing.assert_close(losses[:, i], single_losses, rtol=0, atol=1e-3)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_other_optimizers_update_each_copy_as_alone(optimizer):
    cfg = TrainerConfig(progress=False, optimizer=optimizer, lr=0.01)
    losses = train_stack(make_stack(LeNetConfig(), cfg), 6)
    for i, seed in enumerate(SEEDS):
        torch.testing.assert_close(
            losses[:, i], single_run(LeNetConfig(), seed, 6, cfg)[0], rtol=0, atol=1e-5
        )


def test_final_accuracy_matches_single_runs():
    """Short training (the synthetic data are soon learnt), then evaluation in eval mode,
    which uses batch norm's running statistics."""
    model_cfg, cfg = LeNetConfig(norm="batch"), TrainerConfig(progress=False)
    stack = make_stack(model_cfg, cfg)
    train_stack(stack, 12)
    evaluations = stack.evaluate(X_TEST, Y_TEST, batch_size=64)
    for i, seed in enumerate(SEEDS):
        model = single_run(model_cfg, seed, 12, cfg)[1].eval()
        with torch.no_grad():
            predictions = model(X_TEST).argmax(1)
        single_correct = int((predictions == Y_TEST).sum())
        assert abs(round(evaluations[i].accuracy * len(Y_TEST)) - single_correct) <= 2
        assert int((predictions != evaluations[i].predictions).sum()) <= 2
        # copy i as an ordinary model predicts what the stack predicts for it
        with torch.no_grad():
            assert torch.equal(stack.copy(i)(X_TEST).argmax(1), evaluations[i].predictions)
        assert 0.2 < evaluations[i].accuracy < 0.95  # learning, and not yet perfect


def test_state_round_trip_resumes_exactly():
    cfg = TrainerConfig(progress=False)
    stack = make_stack(LeNetConfig(norm="batch"), cfg)
    idx = batches(data_generators(SEEDS, CPU), 5)
    for step in idx[:3]:
        stack.step(step)
    buffer = io.BytesIO()
    torch.save({"model": stack.model.state_dict(), "opt": stack.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = make_stack(LeNetConfig(norm="batch"), cfg)
    restored.model.load_state_dict(state["model"])
    restored.optimizer.load_state_dict(state["opt"])
    for step in idx[3:]:
        assert torch.equal(stack.step(step), restored.step(step))


# on CUDA too: a grouped-convolution kernel that computed the copies as one block with zeros
# off the diagonal would spread a NaN (0 * NaN) into every copy
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[cuda, pytest.mark.gpu])])
def test_a_diverged_copy_leaves_the_others_unchanged(device, cudnn_deterministic):
    cfg, device = TrainerConfig(progress=False), torch.device(device)
    x_train = X_TRAIN.to(device)
    clean = train_stack(
        make_stack(LeNetConfig(norm="batch"), cfg, x_train=x_train, device=device), 6
    )
    poisoned_stack = make_stack(LeNetConfig(norm="batch"), cfg, x_train=x_train, device=device)
    with torch.no_grad():
        poisoned_stack.model.features[0][0][0].weight[1, 0, 0, 0, 0] = float("nan")
    poisoned = train_stack(poisoned_stack, 6)
    assert torch.isnan(poisoned[:, 1]).all()
    assert torch.equal(poisoned[:, [0, 2]], clean[:, [0, 2]])
    finite = [torch.isfinite(p[[0, 2]]).all() for p in poisoned_stack.model.parameters()]
    assert all(finite)


def test_a_layer_it_cannot_stack_is_named():
    models = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(dim=1)) for _ in range(2)]
    with pytest.raises(TypeError, match="Softmax"):
        stack_models(models)


def test_memory_estimate_grows_per_copy_with_its_optimizer_state():
    def estimate(n, **trainer):
        return estimate_bytes(LeNetConfig(), SHAPE, CLASSES, n, TrainerConfig(**trainer))

    params = count_params(build_model(LeNetConfig(), SHAPE, CLASSES))
    per_copy = estimate(2) - estimate(1)
    assert estimate(8) == estimate(1) + 7 * per_copy
    assert per_copy > 4 * 4 * params  # weights, gradients, Adam's two moments
    sgd_per_copy = estimate(2, optimizer="sgd") - estimate(1, optimizer="sgd")
    assert per_copy - sgd_per_copy == 4 * params  # momentum is one buffer, Adam keeps two
    wide = estimate_bytes(LeNetConfig(width=2.0), SHAPE, CLASSES, 1, TrainerConfig())
    assert wide > estimate(1)


def test_colour_inputs_reach_each_copy_whole():
    """Three channels per image: the stacked layout must keep each copy's channels together."""
    shape, cfg = (3, 16, 16), TrainerConfig()
    ds = data.load(SyntheticDataConfig(shape=list(shape), train_size=64, test_size=8))
    x = data.to_device(ds.x_train, CPU, [0.5, 0.5])
    model_cfg = LeNetConfig(channels=[4, 8], padding="same")
    models = [seeded(model_cfg, s, shape) for s in SEEDS]
    stack = SeedStack(models, CPU, cfg, TrainData(x, ds.y_train, x, ds.y_train))
    shared = stack.logits(x[:8])
    for i in range(len(SEEDS)):
        with torch.no_grad():
            model = stack.copy(i).train()
            torch.testing.assert_close(shared[i], model(x[:8]), rtol=0, atol=1e-5)


def test_one_dimensional_copies_are_their_seeds_single_runs():
    """Series (channels, length): Conv1d, pooling and batch norm in 1-D stack too."""
    shape, cfg = (1, 48), TrainerConfig(progress=False)
    ds = data.load(SyntheticDataConfig(shape=list(shape), train_size=128, test_size=8))
    x = data.to_device(ds.x_train, CPU, [0.5, 0.5])
    model_cfg = LeNetConfig(channels=[4, 8], norm="batch")
    models = [seeded(model_cfg, s, shape) for s in SEEDS]
    stack = SeedStack(models, CPU, cfg, TrainData(x, ds.y_train, x, ds.y_train))
    idx = epoch_permutations(data_generators(SEEDS, CPU), len(x), CPU)[:, :32]
    losses = stack.step(idx)
    for i, seed in enumerate(SEEDS):
        model = seeded(model_cfg, seed, shape)
        expected = F.cross_entropy(model(x[idx[i]]), ds.y_train[idx[i]])
        torch.testing.assert_close(losses[i], expected.detach(), rtol=1e-5, atol=1e-6)


def test_each_copy_is_the_run_of_its_seed(runs):
    m = metrics_of(runs / "stack")
    assert m["status"] == "completed" and m["seeds"] == [5, 6, 7]
    assert [row["seed"] for row in m["per_seed"]] == [5, 6, 7]
    history = history_of(runs / "stack")
    for row in m["per_seed"]:
        single = metrics_of(runs / f"single{row['seed']}")
        assert row["status"] == "completed"
        assert abs(row["accuracy"] - single["accuracy"]) <= 2 / 128  # a test image or two
        # the losses per epoch, to float tolerance
        mine = [h for h in history if h["seed"] == str(row["seed"])]
        theirs = history_of(runs / f"single{row['seed']}")
        for a, b in zip(mine, theirs, strict=True):
            assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-4)
    accuracies = [row["accuracy"] for row in m["per_seed"]]
    assert m["accuracy"] == pytest.approx(sum(accuracies) / 3)
    assert m["accuracy_std"] == pytest.approx(torch.tensor(accuracies).double().std().item())
    assert len(history) == 2 * 3  # a row per epoch and seed


def test_confusion_matrix_sums_the_copies(runs):
    rows = (runs / "stack" / "confusion_matrix.csv").read_text().strip().splitlines()[1:]
    total = sum(sum(map(int, row.split(",")[1:])) for row in rows)
    assert total == 3 * 128  # every test image, once per copy


def test_compare_shows_mean_std_and_n(runs, capsys):
    assert compare_command([runs / "stack"], fmt="json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 3 and row["accuracy_%_std"] > 0


def test_a_stack_resumes_exactly_from_a_mid_epoch_interrupt(runs, tmp_path, monkeypatch):
    common = ["model=lenet5", "model.norm=batch", *SMALL, "trainer.epochs=2", "seed=5", "seeds=3"]
    with pytest.MonkeyPatch.context() as mp:  # SIGINT inside step 11: epoch 2, step 3
        patch_steps(mp, lambda state, n: n == 11 and signal.raise_signal(signal.SIGINT))
        assert cnnlab_train(tmp_path / "stopped", *common) == 130
    assert load_checkpoint(tmp_path / "stopped")["position"] == 3 * 32
    assert cnnlab_train(tmp_path / "resumed", *common, f"resume={tmp_path / 'stopped'}") == 0
    assert history_of(tmp_path / "resumed") == history_of(runs / "stack")
    assert metrics_of(tmp_path / "resumed")["images_seen"] == 2 * 256


def test_a_diverged_copy_is_named_by_its_seed_and_the_others_finish(tmp_path, monkeypatch):
    def poison(state, n):  # step 10: copy 1's first conv weights become Inf
        if n == 10:
            with torch.no_grad():
                next(state.model.parameters())[1].fill_(float("inf"))

    patch_steps(monkeypatch, poison)
    run = tmp_path / "run"
    code = cnnlab_train(run, "model=lenet5", *SMALL, "trainer.epochs=2", "seeds=3")
    assert code == 0
    m = metrics_of(run)
    assert [row["status"] for row in m["per_seed"]] == ["completed", "diverged", "completed"]
    assert "seed 1: loss became" in (run / "train.log").read_text()
    done = [row["accuracy"] for row in m["per_seed"] if row["accuracy"] is not None]
    assert m["accuracy"] == pytest.approx(sum(done) / 2)


def test_seeds_below_one_are_refused_with_one_line(tmp_path, capfd):
    assert cnnlab_train(tmp_path / "run", "model=mlp", *SMALL, "seeds=0") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: seeds=0")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_digits_seeds_4_matches_four_single_runs(tmp_path):
    """The issue's check: each copy within 0.011 of its separate run on real data."""
    common = ["model=lenet5", "data=digits", "trainer.epochs=2"]
    assert cnnlab_train(tmp_path / "stack", *common, "seeds=4") == 0
    m = metrics_of(tmp_path / "stack")
    assert [row["seed"] for row in m["per_seed"]] == [0, 1, 2, 3]
    for row in m["per_seed"]:
        assert cnnlab_train(tmp_path / str(row["seed"]), *common, f"seed={row['seed']}") == 0
        single = metrics_of(tmp_path / str(row["seed"]))["accuracy"]
        assert abs(row["accuracy"] - single) <= 0.011
