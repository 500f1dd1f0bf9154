"""The training loop (cnnlab.loop): one model and a stack of seeds behind one interface, the
step's bookkeeping, the data left as the caller made it."""

import pytest
import torch

from cnnlab.config import LeNetConfig, TrainerConfig
from cnnlab.devices import seed_everything
from cnnlab.engine import TrainData
from cnnlab.loop import live_mean, read_losses, start_run
from cnnlab.models import build_model
from cnnlab.stack import SeedStack, SingleModel

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
SHAPE, CLASSES = (3, 16, 16), 4  # three channels: NHWC is then another layout than NCHW


def tensors(n: int = 96) -> TrainData:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return TrainData(x, y, x[:32].clone(), y[:32].clone())


def build(seed: int) -> torch.nn.Module:
    seed_everything(seed)
    return build_model(LeNetConfig(channels=[4, 8], fc=[16], padding="same"), SHAPE, CLASSES)


def test_one_model_and_a_stack_of_one_step_evaluate_and_copy_alike():
    cfg, data = TrainerConfig(batch_size=16), tensors()
    single, stack = SingleModel(build(7), CPU, cfg, data), SeedStack([build(7)], CPU, cfg, data)
    idx = torch.randperm(96, generator=torch.Generator().manual_seed(1))[:16].view(1, 16)
    for _ in range(3):
        a, b = single.step(idx), stack.step(idx)
        assert a.shape == b.shape == (1,)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    (one,), (other,) = (
        single.evaluate(data.x_test, data.y_test),
        stack.evaluate(data.x_test, data.y_test),
    )
    assert one.loss == pytest.approx(other.loss, rel=1e-4)
    assert torch.equal(one.predictions, other.predictions)
    for copies in (single, stack):
        assert copies.copy(0)(data.x_test[:2]).shape == (2, CLASSES)


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["one model", "stack"])
def test_starting_a_run_leaves_the_callers_tensors_as_they_were(seeds):
    data = tensors()
    before = {k: (v, v.stride()) for k, v in vars(data).items() if v is not None}
    state, training = start_run(build, seeds, data, TrainerConfig(batch_size=16), CPU)
    assert {k: (v, v.stride()) for k, v in vars(data).items() if v is not None} == before
    assert all(t is before[k][0] for k, t in vars(data).items() if t is not None)
    assert training.step(torch.zeros(len(seeds), 16, dtype=torch.long)).shape == (len(seeds),)
    assert len(training.evaluate(data.x_test, data.y_test)) == len(seeds)


def test_read_losses_tells_each_copys_finiteness_since_the_last_check_and_its_mean():
    nan, inf = float("nan"), float("inf")
    losses = torch.tensor([[nan, 1.0, 2.0], [1.0, 3.0, 4.0], [1.0, 5.0, inf]])
    finite, means = read_losses(losses, checked=1, upto=3)
    assert finite == [True, True, False]  # copy 0's NaN was in an earlier check
    assert means[1] == pytest.approx(3.0)
    finite, _ = read_losses(losses, checked=0, upto=2)
    assert finite == [False, True, True]


def test_the_running_loss_is_the_mean_of_the_copies_still_training():
    from cnnlab.loop import RunState

    state = RunState(torch.nn.Linear(1, 1), None, [3, 4, 5], [])
    state.diverged[4] = "seed 4: loss became nan"
    assert live_mean(state, [1.0, float("nan"), 3.0]) == pytest.approx(2.0)
