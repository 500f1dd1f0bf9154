"""cnnlab.inspection and `cnnlab inspect`: parameters, MACs and receptive fields against
values derived by hand, per axis and in 1-D; the output formats; the command without any
dataset file; the filters and feature-map pictures."""

import csv
import io
import json
import time

import numpy as np
import pytest
import torch
from conftest import MNIST, PNG_MAGIC, compiler_modules_after
from torch import nn

from cnnlab import pictures
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.inspection import (
    conv_stages,
    format_inspection,
    inspect_model,
)
from cnnlab.models import Residual, build_model, count_params


def inspect(cfg, shape=MNIST):
    return inspect_model(build_model(cfg, shape, 10), shape)


def row(info, name):
    return next(layer for layer in info["layers"] if layer["name"] == name)


# ---- the numbers -------------------------------------------------------------------------

# LeNet-5: RF 5 (conv1), 6 (pool, jump 2), 6 + 4*2 = 14 (conv2), 16 (pool); dilation 2 makes
# each 5x5 conv span 9: 9, 10, 10 + 8*2 = 26, 28. MACs: 6*24*24*25 + 16*8*8*150 (convs)
# + 256*120 + 120*84 + 84*10 (dense); with "same" padding 6*28*28*25 + 16*14*14*150
# + 784*120 + 120*84 + 84*10. The MLP: 784*128 + 128*10.
KNOWN = [
    (LeNetConfig(), 44_426, 281_640, 16),
    (LeNetConfig(padding="same"), 107_786, 693_000, 16),
    (LeNetConfig(padding="same", dilation=2), 107_786, 693_000, 28),
    (MLPConfig(), 101_770, 101_632, 28),  # every hidden unit sees the whole 28x28 input
    # 5x1 + 1x5: 6*24*28*5 + 6*24*24*6*5 + 16*8*12*6*5 + 16*8*8*16*5 + 41,640 dense
    (LeNetConfig(factorize=True), 43_846, 293_480, 16),
    # stride 2, no pooling: RF 5, then 5 + 4*2 = 13; 6*14*14*25 + 16*7*7*150 + 105,000 dense
    (LeNetConfig(stride=2, padding="same", pool="none"), 107_786, 252_000, 13),
    # a 1x1 conv to 4 channels first: 4*28*28 + 6*24*24*100 + 4*12*12*6 + 16*8*8*100 + dense
    (LeNetConfig(bottleneck=4), 44_112, 496_232, 16),
]


@pytest.mark.parametrize(("cfg", "params", "macs", "rf"), KNOWN)
def test_known_models(cfg, params, macs, rf):
    info = inspect(cfg)
    assert (info["params"], info["macs"], info["receptive_field"]) == (params, macs, rf)
    assert sum(layer["params"] for layer in info["layers"]) == params
    assert sum(layer["macs"] for layer in info["layers"]) == macs


# every way the models put convs and dense layers together; 2-D on MNIST's shape and 1-D
CONFIGS = [
    LeNetConfig(),
    MLPConfig(),
    MLPConfig(hidden=[64, 32], dropout=0.5),
    LeNetConfig(factorize=True),
    LeNetConfig(bottleneck=4, padding="same"),
    LeNetConfig(branches=[1, 3, 5], branch_pool=True, padding="same"),
    LeNetConfig(branches=[3, 5], padding="same", norm="batch", depth=2),
    LeNetConfig(residual=True, depth=2, padding="same"),  # 1x1 projection shortcuts
    LeNetConfig(
        channels=[16, 32, 64],
        fc=[],
        depth=2,
        kernel_size=3,
        padding="same",
        norm="batch",
        residual=True,
    ),  # resnet_small
    LeNetConfig(dilation=2, padding="same", stride=2, pool="avg"),
    LeNetConfig(kernel_size=(5, 3), stride=2, pool="none", norm="group", width=2.0),
    LeNetConfig(depth=3, norm="layer", activation="gelu"),
]


def reference_macs(model: nn.Module, shape) -> tuple[int, dict[str, int]]:
    """torch's FlopCounterMode (what the MACs were counted with before, FLOPs / 2): the
    total and per dotted module name."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *shape))
    root = type(model).__name__
    per_name = {
        name: sum(counter.get_flop_counts().get(f"{root}.{name}", {}).values()) // 2
        for name, _ in model.named_modules()
    }
    return counter.get_total_flops() // 2, per_name


@pytest.mark.parametrize(
    ("cfg", "shape"), [*((cfg, MNIST) for cfg in CONFIGS), (LeNetConfig(), (2, 96))]
)
def test_macs_are_torch_flop_counters(cfg, shape):
    model = build_model(cfg, shape, 10)
    total, per_name = reference_macs(model, shape)
    info = inspect_model(model, shape)
    assert info["macs"] == total > 0
    assert {layer["name"]: layer["macs"] for layer in info["layers"]} == {
        layer["name"]: per_name[layer["name"]] for layer in info["layers"]
    }


def test_macs_of_a_hand_made_one_dimensional_model_are_torch_flop_counters():
    model = nn.Sequential(
        nn.Conv1d(3, 8, 7, padding=3, groups=1),
        nn.Conv1d(8, 8, 3, stride=2, dilation=3, groups=4),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    assert inspect_model(model, (3, 50))["macs"] == reference_macs(model, (3, 50))[0]


def test_counting_macs_imports_no_compiler(tmp_path, run_cli):
    """torch's FlopCounterMode imports torch._dynamo (1.7 s of every run's start)."""
    script = (
        "import sys\n"
        "from cnnlab.config import LeNetConfig\n"
        "from cnnlab.inspection import inspect_model\n"
        "from cnnlab.models import build_model\n"
        "info = inspect_model(build_model(LeNetConfig(), (1, 28, 28), 10), (1, 28, 28))\n"
        "assert info['macs'] == 281_640, info['macs']\n"
    )
    assert compiler_modules_after(run_cli, tmp_path, script) == []


def test_lenet5_rows():
    info = inspect(LeNetConfig())
    pools = [layer for layer in info["layers"] if layer["type"] == "MaxPool2d"]
    assert [(p["receptive_field"], p["jump"], p["output_shape"]) for p in pools] == [
        (6, 2, [6, 12, 12]),
        (16, 4, [16, 4, 4]),
    ]
    assert row(info, "features.0.0.0")["macs"] == 6 * 24 * 24 * 25
    assert row(info, "classifier.1")["macs"] == 256 * 120
    # after flatten the units see the whole input and there is no grid left to jump on
    assert row(info, "classifier.0")["jump"] is None
    assert row(info, "features.0.0.1")["macs"] == 0  # ReLU


def test_factorized_pair_gives_per_axis_fields():
    info = inspect(LeNetConfig(factorize=True))
    assert row(info, "features.0.0.0")["receptive_field"] == [5, 1]  # 5x1 first
    assert row(info, "features.0.0.1")["receptive_field"] == 5  # then 1x5: square again
    assert row(info, "features.2.0.0")["receptive_field"] == [14, 6]
    info = inspect(LeNetConfig(kernel_size=(5, 3)))
    # down: 5, 6, 6 + 4*2 = 14, 16; across: 3, 4, 4 + 2*2 = 8, 10
    assert info["receptive_field"] == [16, 10]


def test_residual_takes_the_wider_path():
    # the shortcut (5x5) sees more than the body (3x3): the sum sees what the shortcut sees
    block = Residual(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 5, padding=2), nn.ReLU())
    info = inspect_model(nn.Sequential(block, nn.MaxPool2d(2)), (1, 8, 8))
    assert row(info, "0.body")["receptive_field"] == 3
    assert row(info, "0.shortcut")["receptive_field"] == 5
    assert row(info, "0.act")["receptive_field"] == 5
    assert info["receptive_field"] == 6  # 5 + 1 * (2 - 1) after the pool


def test_residual_lenet_counts_every_parameter():
    model = build_model(LeNetConfig(residual=True, padding="same", depth=2), MNIST, 10)
    info = inspect_model(model, MNIST)
    assert sum(layer["params"] for layer in info["layers"]) == count_params(model)
    # two 5x5 convs per stage: 5, 9 | pool 10 | 18, 26 | pool 28; the 1x1 shortcuts see less
    assert row(info, "features.0.shortcut.0")["receptive_field"] == 1
    assert row(info, "features.0.act")["receptive_field"] == 9
    assert info["receptive_field"] == 28


def test_one_dimensional_model_has_int_fields():
    model = nn.Sequential(
        nn.Conv1d(1, 4, 7, padding=3),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(4, 8, 5, dilation=2),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    info = inspect_model(model, (1, 96))
    # 7, 8 (jump 2), 8 + 4*2*2 = 24; MACs 4*96*7 + 8*40*4*5 + 8*2
    assert info["receptive_field"] == 24
    assert info["macs"] == 4 * 96 * 7 + 8 * 40 * 4 * 5 + 8 * 2
    assert info["params"] == count_params(model)
    assert row(info, "3")["output_shape"] == [8, 40]
    assert row(info, "2")["jump"] == 2


def test_inspection_leaves_the_model_as_it_was():
    model = build_model(LeNetConfig(norm="batch"), MNIST, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inspect_model(model, MNIST)
    pictures.plot_feature_maps(model, torch.randn(2, *MNIST), io.BytesIO())  # nothing on disk
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


# ---- formats -----------------------------------------------------------------------------


def test_formats():
    info = inspect(LeNetConfig())
    table = format_inspection(info, "table")
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "44,426", "281,640", "16"]
    assert "pooling, activations" in table and "count 0" in table
    md = format_inspection(info, "md")
    assert "| **total** |" in md and "**281,640**" in md and "pooling, activations" in md
    rows = list(csv.DictReader(io.StringIO(format_inspection(info, "csv"))))
    assert len(rows) == len(info["layers"])
    assert rows[0]["output_shape"] == "6x24x24" and rows[0]["params"] == "156"
    assert json.loads(format_inspection(info, "json")) == info
    with pytest.raises(ValueError, match="format='xml'"):
        format_inspection(info, "xml")


# ---- the command -------------------------------------------------------------------------

# a process that builds a model without data still imports torch and Hydra: seconds
FEW_SECONDS = 30


def test_inspect_command_json_needs_no_data(tmp_path, run_main):
    start = time.perf_counter()
    result = run_main(tmp_path, "inspect", "model=lenet5", "data=mnist", "--format", "json")
    assert time.perf_counter() - start < FEW_SECONDS
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["params"], info["macs"], info["receptive_field"]) == (44_426, 281_640, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no run folder, no outputs/
    assert list((tmp_path / "data").iterdir()) == []  # nothing looked for or downloaded


def test_inspect_command_table(tmp_path, run_main):
    result = run_main(tmp_path, "inspect", "--format", "table", "variant=dilation2")
    assert result.returncode == 0, result.stderr
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "107,786", "693,000", "28"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["model=nosuch"], ["model/nosuch", "mlp"]),  # Hydra's refusal
        (["model.kernel_size=40"], ["model.kernel_size=40", "1x28x28"]),  # models.py's
        (["--format", "xml"], ["xml", "json"]),
    ],
)
def test_inspect_command_bad_input(tmp_path, run_main, args, names):
    result = run_main(tmp_path, "inspect", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0]
    assert result.stdout == ""


# ---- pictures ----------------------------------------------------------------------------


def assert_png(path):
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 1000


def test_filters_and_feature_maps_for_lenet(tmp_path):
    model = build_model(LeNetConfig(), MNIST, 10)
    pictures.plot_filters(model, tmp_path / "filters.png")
    assert pictures.plot_feature_maps(model, torch.randn(3, *MNIST), tmp_path / "fm.png") == 2
    assert_png(tmp_path / "filters.png")
    assert_png(tmp_path / "fm.png")


def test_mlp_filters_are_input_shaped_templates(tmp_path):
    model = build_model(MLPConfig(), MNIST, 10)
    first = pictures.first_layer_weights(model, MNIST)
    assert (first.name, tuple(first.weights.shape)) == ("first dense layer", (128, 1, 28, 28))
    pictures.plot_filters(model, tmp_path / "filters.png", MNIST)
    assert_png(tmp_path / "filters.png")
    assert pictures.plot_feature_maps(model, torch.randn(2, *MNIST), tmp_path / "fm.png") == 0
    assert not (tmp_path / "fm.png").exists()


def test_pictures_of_a_one_dimensional_model(tmp_path):
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3), nn.Flatten()
    )
    pictures.plot_filters(model, tmp_path / "filters.png")
    assert pictures.plot_feature_maps(model, torch.randn(2, 2, 40), tmp_path / "fm.png") == 2
    assert_png(tmp_path / "filters.png")
    assert_png(tmp_path / "fm.png")


def test_which_layers_the_pictures_show():
    # a 1x1 bottleneck has no spatial picture: filters.png shows the 5x5 conv behind it
    model = build_model(LeNetConfig(bottleneck=4), MNIST, 10)
    first = pictures.first_layer_weights(model)
    assert (first.name, tuple(first.weights.shape)) == ("conv 1", (6, 4, 5, 5))
    assert first.weights is model.get_submodule("features.0.1.0").weight
    assert [n for n, _ in conv_stages(model)] == [
        "features.0.0",
        "features.0.1",
        "features.2.0",
        "features.2.1",
    ]
    # a residual stage is one stage: its activation comes after the shortcut is added
    model = build_model(LeNetConfig(residual=True, padding="same", depth=2), MNIST, 10)
    assert [n for n, _ in conv_stages(model)] == ["features.0", "features.2"]
    # a multi-scale conv is one stage: its branches' maps concatenated, then activated
    model = build_model(LeNetConfig(branches=[1, 3, 5], padding="same"), MNIST, 10)
    assert [n for n, _ in conv_stages(model)] == ["features.0.0", "features.2.0"]


def test_mosaic_puts_gaps_between_tiles():
    image = pictures.mosaic(np.ones((5, 3, 2)), cols=3)
    assert image.shape == (3 + 1 + 3, 3 * 2 + 2)
    assert np.isnan(image[3]).all() and np.isnan(image[:, 2]).all()
    assert np.isnan(image[4:, 6:]).all()  # the grid's unused sixth place
    assert np.nansum(image) == 5 * 3 * 2
