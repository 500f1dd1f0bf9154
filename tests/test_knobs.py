"""The knobs the chapter's claims need: sigmoid and tanh activations (the chapter contrasts
ReLU with them) and dropout in the dense head, for the LeNet family and the MLP."""

import json

import pytest
import torch
from torch import nn

from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.layers import ACTIVATIONS
from cnnlab.models import build_model, count_params, summary
from cnnlab.outcome import ConfigError
from tests.conftest import QUICK, cnnlab_train, metrics_of

MNIST = (1, 28, 28)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigmoid_and_tanh_are_in_the_table():
    assert isinstance(ACTIVATIONS["sigmoid"](0.05), nn.Sigmoid)
    assert isinstance(ACTIVATIONS["tanh"](0.05), nn.Tanh)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("cfg", [LeNetConfig, MLPConfig])
def test_activation_is_used_everywhere(cfg, name):
    model = build_model(cfg(activation=name), MNIST, 10)
    kinds = {type(m) for m in model.modules()}
    assert kinds & {nn.Sigmoid, nn.Tanh} == {type(ACTIVATIONS[name](0))}
    assert nn.ReLU not in kinds
    assert name in summary(model)


def dropouts(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


def test_dropout_follows_each_hidden_dense_activation():
    lenet = build_model(LeNetConfig(dropout=0.5), MNIST, 10)
    # fc120 relu dropout fc84 relu dropout fc10: none after the last layer, none in the convs
    assert summary(lenet).endswith("fc256-120 relu dropout fc120-84 relu dropout fc84-10")
    assert dropouts(lenet) == [0.5, 0.5]
    assert dropouts(lenet.features) == []
    mlp = build_model(MLPConfig(dropout=0.25), MNIST, 10)
    assert summary(mlp) == "fc784-128 relu dropout fc128-10"
    assert dropouts(build_model(MLPConfig(dropout=0.25, hidden=[]), MNIST, 10)) == []


def test_dropout_zero_adds_nothing_and_no_parameters():
    for cfg in (LeNetConfig, MLPConfig):
        plain, dropped = build_model(cfg(), MNIST, 10), build_model(cfg(dropout=0.3), MNIST, 10)
        assert dropouts(plain) == []
        assert count_params(plain) == count_params(dropped)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = build_model(MLPConfig(dropout=0.5), MNIST, 10)
    x = torch.randn(8, *MNIST)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("cfg", [LeNetConfig, MLPConfig])
def test_bad_dropout_is_refused(cfg, p):
    with pytest.raises(ConfigError, match=rf"model.dropout={p} .*0 <= p < 1"):
        cfg(dropout=p)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.activation=sigmoid"],
        ["model.activation=tanh"],
        ["model.dropout=0.5"],
        ["model=mlp", "model.activation=tanh", "model.dropout=0.5"],
    ],
)
def test_knobs_train(tmp_path, overrides):
    assert cnnlab_train(tmp_path / "run", *QUICK, *overrides) == 0
    metrics = metrics_of(tmp_path / "run")
    assert metrics["status"] == "completed"
    for value in (v.split("=")[1] for v in overrides if "activation" in v):
        assert value in metrics["layers"]
    if "model.dropout=0.5" in overrides:
        assert "dropout" in metrics["layers"]


def test_inspect_shows_the_new_layers(tmp_path, run_cli):
    args = ["model.activation=tanh", "model.dropout=0.5", "data=synthetic", "--format", "json"]
    result = run_cli(tmp_path, "inspect", *args)
    assert result.returncode == 0, result.stderr
    types = [layer["type"] for layer in json.loads(result.stdout)["layers"]]
    assert "Tanh" in types and types.count("Dropout") == 2


def test_bad_dropout_on_the_command_line(tmp_path, run_cli):
    result = run_cli(tmp_path, "train", *QUICK, "model.dropout=1.0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.dropout=1.0" in lines[0]
    assert not (tmp_path / "outputs").exists()
