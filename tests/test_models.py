"""cnnlab.models: parameter counts by hand, every knob built and trained one step, and the
invalid combinations refused at build time with the knob, its value and the input size.

The knobs the chapter's claims need: sigmoid and tanh activations (the chapter contrasts
ReLU with them) and dropout in the dense head, for the LeNet family and the MLP.

models.plan: the shape plan that LeNet and the MLP are built from, checked against the
models built from it (every conv's sizes, the flattened size, the dense layers), the
state_dict keys checkpoints depend on, and inspect_model on a meta-device model.

Issue 28: the validation split, early stopping, multi-scale checks and trainer.threads
attacked as a hostile user would. A split that holds out nothing or everything, or leaves
a class the test set holds out of training, is bad input found by the pre-flight check
from the real training count of every source: one `error:` line on stderr, exit 2, no run
folder. A run stopped early stays stopped when resumed."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache, lru_cache
from pathlib import Path

import pytest
import torch
from conftest import MNIST, QUICK, SERIES, cnnlab_train, metrics_of
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from torch import nn

import cnnlab.hydra_app
from cnnlab import cli
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.hydra_app import setup
from cnnlab.inspection import inspect_model
from cnnlab.layers import ACTIVATIONS, NORMS, Branches
from cnnlab.models import Plan, build_model, count_conv_layers, count_params, plan, summary
from cnnlab.outcome import ConfigError

CIFAR = (3, 32, 32)


SHAPES = [MNIST, CIFAR]


def lenet(**kw) -> LeNetConfig:
    return LeNetConfig(**kw)


def params(cfg, shape=MNIST, classes=10) -> int:
    return count_params(build_model(cfg, shape, classes))


@lru_cache
def compose_model(*overrides):
    """The model config as `cnnlab train` sees it: composed by Hydra, then the dataclass.
    Cached: each compose costs a quarter second, and no test changes the config it gets."""
    with initialize_config_dir(config_dir=str(cnnlab.hydra_app.config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_object(cfg.model)


# LeNet-5's dense head on 1x28x28 after two valid 5x5 convs and two 2x2 pools:
# 28 -> 24 -> 12 -> 8 -> 4, so 16 * 4 * 4 = 256 inputs.
HEAD = (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)


EXPECTED = {
    "mlp": (784 * 128 + 128) + (128 * 10 + 10),
    "lenet5": (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16) + HEAD,
    # width 2: 12 and 32 channels, 240 and 168 dense units, 32 * 4 * 4 = 512 inputs
    "lenet5_wide": (12 * 1 * 5 * 5 + 12)
    + (32 * 12 * 5 * 5 + 32)
    + (512 * 240 + 240)
    + (240 * 168 + 168)
    + (168 * 10 + 10),
    # depth 2: an extra out -> out 5x5 conv per stage, 'same' padding so the head is unchanged
    "lenet5_deep": (6 * 1 * 5 * 5 + 6)
    + (6 * 6 * 5 * 5 + 6)
    + (16 * 6 * 5 * 5 + 16)
    + (16 * 16 * 5 * 5 + 16)
    + HEAD,
    # 3 stages of two 3x3 convs (no bias, batch norm: 2 * c each) and a 1x1 projection
    # (no bias, batch norm), 'same' padding: 28 -> 14 -> 7 -> 3, head 64 * 3 * 3 -> 10
    "resnet_small": (16 * 1 * 3 * 3 + 2 * 16)
    + (16 * 16 * 3 * 3 + 2 * 16)
    + (16 * 1 + 2 * 16)
    + (32 * 16 * 3 * 3 + 2 * 32)
    + (32 * 32 * 3 * 3 + 2 * 32)
    + (32 * 16 + 2 * 32)
    + (64 * 32 * 3 * 3 + 2 * 64)
    + (64 * 64 * 3 * 3 + 2 * 64)
    + (64 * 32 + 2 * 64)
    + (64 * 3 * 3 * 10 + 10),
}


# the figures the configs' comments and the chapter quote
assert EXPECTED["mlp"] == 101_770


assert EXPECTED["lenet5"] == 44_426


LENET5_VARIANTS = {
    # k x 1 in -> out without bias, then 1 x k out -> out with bias
    "factorize": (
        {"factorize": True},
        (6 * 1 * 5 * 1) + (6 * 6 * 1 * 5 + 6) + (16 * 6 * 5 * 1) + (16 * 16 * 1 * 5 + 16) + HEAD,
    ),
    # a 1x1 conv block in -> 4 (bias, activation) before each 5x5 conv, which becomes 4 -> out
    "bottleneck": (
        {"bottleneck": 4},
        (4 * 1 * 1 * 1 + 4)
        + (6 * 4 * 5 * 5 + 6)
        + (4 * 6 * 1 * 1 + 4)
        + (16 * 4 * 5 * 5 + 16)
        + HEAD,
    ),
    # dilation 2, padding 0: a 9x9 footprint, 28 -> 20 -> 10 -> 2 -> 1, so 16 * 1 * 1 inputs
    "dilation": (
        {"dilation": 2},
        (6 * 1 * 5 * 5 + 6)
        + (16 * 6 * 5 * 5 + 16)
        + (16 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * 10 + 10),
    ),
    # conv bias off, batch norm has a scale and a shift per channel
    "batch_norm": (
        {"norm": "batch"},
        (6 * 1 * 5 * 5 + 2 * 6) + (16 * 6 * 5 * 5 + 2 * 16) + HEAD,
    ),
    # LRN has no parameters and no shift, so the conv keeps its bias
    "lrn": ({"norm": "lrn"}, EXPECTED["lenet5"]),
    # 'same' padding: 28 -> 28 -> 14 -> 14 -> 7, head 16 * 7 * 7 = 784 inputs
    "same": (
        {"padding": "same"},
        (6 * 1 * 5 * 5 + 6)
        + (16 * 6 * 5 * 5 + 16)
        + (784 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * 10 + 10),
    ),
}


KNOB_VALUES = (
    [("activation", v) for v in ("relu", "leaky_relu", "gelu")]
    + [("pool", v) for v in ("max", "avg", "none")]
    + [("norm", v) for v in ("none", "batch", "layer", "instance", "group", "lrn")]
    + [("kernel_size", v) for v in (3, 5, [3, 5])]
    + [("stride", v) for v in (1, 2)]
    + [("padding", v) for v in (0, 1, "same", "valid")]
    + [("dilation", v) for v in (1, 2)]
    + [("factorize", v) for v in (False, True)]
    + [("bottleneck", v) for v in (None, 4)]
    + [("residual", v) for v in (False, True)]
    + [("width", v) for v in (0.5, 1.0, 2.0)]
    + [("depth", v) for v in (1, 3)]
)


COMBINATIONS = [
    {"residual": True, "norm": "batch", "stride": 2, "padding": "same"},
    {"factorize": True, "bottleneck": 4, "dilation": 2},
    {"norm": "group", "groups": 4, "width": 2.0},
    {
        "kernel_size": [3, 5],
        "padding": "same",
        "depth": 2,
        "residual": True,
        "activation": "leaky_relu",
    },
    {"pool": "avg", "norm": "layer", "activation": "gelu", "stride": 2, "padding": "same"},
    {"pool": "none", "padding": "valid", "kernel_size": 3, "norm": "instance", "fc": [32]},
    {"norm": "lrn", "width": 0.5, "depth": 3, "dilation": 2, "padding": "same"},
    {"bottleneck": 4, "residual": True, "norm": "group", "groups": 2},
    {"factorize": True, "residual": True, "padding": 1},
    {"stride": 2, "dilation": 2, "padding": "same", "pool": "none", "residual": True},
    {
        "channels": [16, 32, 64],
        "fc": [],
        "depth": 2,
        "kernel_size": 3,
        "padding": "same",
        "norm": "batch",
        "residual": True,
    },  # resnet_small
    {
        "channels": [8],
        "fc": [],
        "kernel_size": 7,
        "padding": 3,
        "bottleneck": 2,
        "factorize": True,
        "norm": "batch",
    },
]


def train_step(cfg, shape, classes=10, batch=3):
    torch.manual_seed(0)
    model = build_model(cfg, shape, classes)
    model.train()
    x = torch.randn(batch, *shape)
    out = model(x)
    assert out.shape == (batch, classes)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.arange(batch) % classes).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    return model


def build_error(cfg, shape=MNIST) -> str:
    with pytest.raises(ConfigError) as e:
        build_model(cfg, shape, 10)
    return str(e.value)


# LeNet-5 on 1x96: 96 -> 92 -> 46 -> 42 -> 21, so 16 * 21 = 336 dense inputs
LENET5_1D = (6 * 1 * 5 + 6) + (16 * 6 * 5 + 16) + (336 * 120 + 120) + (120 * 84 + 84) + (84 * 2 + 2)


KNOB_VALUES_1D = [(k, v) for k, v in KNOB_VALUES if (k, v) not in (("factorize", True),)]
KNOB_VALUES_1D = [(k, v) for k, v in KNOB_VALUES_1D if not isinstance(v, list)]


def dropouts(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


PRESETS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


VARIANTS = sorted(p.stem for p in (CONFIGS / "variant").glob("*.yaml"))


# knobs the presets and variants leave alone: residual stages, depth, groups, 1-D input
EXTRAS = [
    ({"residual": True, "depth": 2, "stride": 2, "padding": "same"}, (3, 32, 32)),
    ({"residual": True, "padding": "valid"}, (1, 28, 28)),
    ({"depth": 3, "norm": "group", "groups": 2, "bottleneck": 4}, (1, 28, 28)),
    ({"kernel_size": (3, 5), "padding": "same", "pool": "avg", "norm": "layer"}, (1, 20, 36)),
    ({"residual": True, "depth": 2, "bottleneck": 4, "kernel_size": 3, "padding": 1}, (2, 60)),
    ({"channels": [8, 16, 32], "norm": "batch", "dilation": 2, "padding": "same"}, (3, 100)),
]


@cache
def composed(*overrides):
    """The model config as `cnnlab train` composes it (cached: a compose costs 0.25 s)."""
    setup()  # the schemas the YAML files name in their defaults
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_object(compose("train", overrides=list(overrides)).model)


def cases():
    for preset in PRESETS:
        for shape in SHAPES:
            yield f"model={preset}", (f"model={preset}",), shape
    for variant in VARIANTS:
        yield f"variant={variant}", (f"variant={variant}",), SHAPES[0]


def leaves_of(model: nn.Module, kind) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def main_convs(model: nn.Module) -> list[nn.Module]:
    """The k x k convs in the order they run (a factorized pair as its first half), without
    1x1 bottlenecks and shortcut projections; of a multi-scale stage, its widest branch's conv
    (the plan's conv)."""
    narrower = set()
    for b in model.modules():
        if isinstance(b, Branches):
            inside = [m for m in b.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]
            narrower |= set(inside) - {max(inside, key=lambda m: m.kernel_size)}
    convs = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv1d | nn.Conv2d) or ".shortcut" in name or m in narrower:
            continue
        if max(m.kernel_size) == 1 or m.kernel_size[:1] == (1,):
            continue  # a bottleneck, or the 1 x k half of a factorized pair
        convs.append(m)
    return convs


def assert_model_follows(shape: Plan, model: nn.Module, cfg) -> None:
    """Every size the plan names is the size the model built from it has and produces."""
    outputs = {}
    convs = main_convs(model)
    for conv in convs:
        conv.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, tuple(o.shape[1:])))
    with torch.no_grad():
        features = model.features(torch.zeros(1, *shape.input_shape)) if shape.stages else None
    planned = [conv for stage in shape.stages for conv in stage.convs]
    assert len(planned) == len(convs)
    for p, conv in zip(planned, convs, strict=True):
        assert conv.kernel_size[0] == p.kernel_size[0] and conv.dilation[0] == p.dilation[0]
        assert conv.stride[0] == p.stride[0] and conv.padding[0] == p.padding[0]
        if getattr(cfg, "branches", None):  # a branch has its share of the channels
            assert outputs[conv][1:] == p.size_out
        elif not (getattr(cfg, "factorize", False) and max(p.kernel_size) > 1):
            assert outputs[conv] == (p.out_ch, *p.size_out)
    if features is not None:
        last = shape.stages[-1]
        assert tuple(features.shape[1:]) == (last.convs[-1].out_ch, *last.out_size)
    dense = [(m.in_features, m.out_features) for m in leaves_of(model, nn.Linear)]
    assert dense == list(shape.dense)
    assert dense[0][0] == shape.flat


# The state_dict keys the builder produced before the plan existed (generated from that
# code): checkpoints written then must load into the models built now.
KEYS = {
    "lenet5": (
        LeNetConfig(),
        (1, 28, 28),
        ["features.0.0.0", "features.2.0.0", "classifier.1", "classifier.3", "classifier.5"],
        44426,
    ),
    "1-D residual, bottleneck, group norm": (
        LeNetConfig(
            bottleneck=4,
            depth=2,
            residual=True,
            stride=2,
            padding="same",
            norm="group",
            kernel_size=3,
        ),  # fmt: skip
        (2, 60),
        [
            *(f"features.{s}.body.{b}.{i}" for s in (0, 2) for b in range(4) for i in (0, 1)),
            *(f"features.{s}.shortcut.{i}" for s in (0, 2) for i in (0, 1)),
            "classifier.1",
            "classifier.3",
            "classifier.5",
        ],
        19734,
    ),
}


def test_mlp_params():
    assert params(MLPConfig()) == EXPECTED["mlp"] == 101_770


def test_lenet5_params():
    assert params(LeNetConfig()) == EXPECTED["lenet5"] == 44_426


def test_lenet5_params_on_cifar():
    # 32 -> 28 -> 14 -> 10 -> 5, head 16 * 5 * 5 = 400 inputs
    expected = (
        (6 * 3 * 5 * 5 + 6)
        + (16 * 6 * 5 * 5 + 16)
        + (400 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * 10 + 10)
    )
    assert params(LeNetConfig(), CIFAR) == expected


def test_lenet5_wide_and_deep_params():
    assert params(lenet(width=2.0)) == EXPECTED["lenet5_wide"]
    assert params(lenet(depth=2)) == EXPECTED["lenet5_deep"]


@pytest.mark.parametrize("name", list(LENET5_VARIANTS))
def test_lenet5_variant_params(name):
    overrides, expected = LENET5_VARIANTS[name]
    assert params(lenet(**overrides)) == expected


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_presets_from_yaml_match_hand_counts(preset):
    cfg = compose_model(f"model={preset}")
    assert isinstance(cfg, MLPConfig if preset == "mlp" else LeNetConfig)
    assert cfg.name == preset
    assert params(cfg) == EXPECTED[preset]


@pytest.mark.parametrize("name", ["factorize", "bottleneck", "dilation", "batch_norm"])
def test_variants_from_yaml_overrides_match_hand_counts(name):
    overrides, expected = LENET5_VARIANTS[name]
    cfg = compose_model(
        "model=lenet5", *(f"model.{k}={str(v).lower()}" for k, v in overrides.items())
    )
    assert params(cfg) == expected


def test_kernel_size_list_from_yaml_becomes_a_tuple():
    cfg = compose_model("model.kernel_size=[3,5]")
    assert cfg.kernel_size == (3, 5)
    assert lenet(kernel_size=[3, 5]).kernel_size == (3, 5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "base",
    [
        {},
        {"padding": "same"},
        {"width": 2.0},
        {"depth": 2},
        {"norm": "batch"},
        {"kernel_size": 7, "padding": "same"},
    ],
)
def test_factorize_has_fewer_params(shape, base):
    assert params(lenet(**base, factorize=True), shape) < params(lenet(**base), shape)


def test_factorize_saves_per_conv_only_when_out_is_below_k_minus_1_times_in():
    # k*k*in*out against k*in*out + k*out*out: fewer only while out < (k - 1) * in. LeNet-5's
    # first conv (1 -> 6) grows either way; with k=5 the 6 -> 16 conv saves more than that,
    # with k=3 it does not (both convs have out > 2 * in), so the claim needs k >= 5 here.
    assert (
        params(lenet(factorize=True)) - params(lenet())
        == ((6 * 1 * 5 + 6 * 6 * 5) - 6 * 1 * 5 * 5 + (16 * 6 * 5 + 16 * 16 * 5) - 16 * 6 * 5 * 5)
        < 0
    )
    assert params(lenet(kernel_size=3, factorize=True)) > params(lenet(kernel_size=3))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("base", [{}, {"kernel_size": 3}, {"depth": 2, "factorize": True}])
def test_same_padding_dilation_keeps_the_param_count(shape, base):
    one = params(lenet(**base, padding="same", dilation=1), shape)
    two = params(lenet(**base, padding="same", dilation=2), shape)
    assert one == two


def test_dilation_without_padding_changes_the_param_count():
    # the counterpart: with padding 0 the map shrinks more, so the dense head is smaller
    assert params(lenet(dilation=2)) < params(lenet(dilation=1))


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("knob, value", KNOB_VALUES, ids=[f"{k}={v}" for k, v in KNOB_VALUES])
def test_every_knob_value_trains(knob, value, shape):
    overrides = {knob: value}
    if knob == "stride" and value == 2:
        # stride 2 with padding 0 leaves 1x28x28 a 1x1 map before the second pool
        # (refused, see test_pool_on_a_1x1_map_is_refused): 'same' keeps it valid
        overrides["padding"] = "same"
    cfg = lenet(**overrides)
    model = train_step(cfg, shape)
    if knob == "kernel_size" and isinstance(value, list):
        assert cfg.kernel_size == tuple(value)
        assert "conv1-6k3x5" in summary(model) or "conv3-6k3x5" in summary(model)


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("combo", COMBINATIONS, ids=[f"combo{i}" for i in range(len(COMBINATIONS))])
def test_combinations_train(combo, shape):
    train_step(lenet(**combo), shape)


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"activation": "leaky_relu"},
        {"activation": "gelu"},
        {"width": 0.5},
        {"width": 2.0},
        {"hidden": []},
        {"hidden": [64, 32]},
    ],
)
def test_mlp_knobs_train(overrides, shape):
    train_step(MLPConfig(**overrides), shape)


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
@pytest.mark.parametrize("preset", list(EXPECTED))
def test_presets_train(preset, shape):
    train_step(compose_model(f"model={preset}"), shape)


def test_residual_preset_adds_the_shortcut():
    # identity where nothing changes, so output = act(body(x) + x)
    cfg = lenet(channels=[6, 6], kernel_size=3, padding="same", residual=True, pool="none")
    model = build_model(cfg, (6, 8, 8), 10)
    stage = model.features[1]
    x = torch.randn(2, 6, 8, 8)
    # (torch.allclose, not torch.testing.assert_close: its first call takes a second)
    assert torch.allclose(stage(x), torch.relu(stage.body(x) + x))


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32"])
def test_map_shrinking_below_1x1_is_refused(shape):
    message = build_error(lenet(kernel_size=7, dilation=3), shape)
    for text in ("model.kernel_size=7", "model.dilation=3", "x".join(map(str, shape)), "1x1"):
        assert text in message


def test_too_many_stages_are_refused():
    # 28 -> 24 -> 12 -> 8 -> 4, then a 5x5 conv on 4x4 in stage 3
    message = build_error(lenet(channels=[6, 16, 32]))
    assert "stage 3" in message and "1x28x28" in message and "model.kernel_size=5" in message


def test_groups_not_dividing_channels_are_refused():
    message = build_error(lenet(norm="group", groups=4))
    assert "model.groups=4" in message and "6 channels" in message and "1x28x28" in message
    # width 0.5 gives 3 channels, which groups=2 does not divide
    message = build_error(lenet(norm="group", width=0.5), CIFAR)
    assert "model.groups=2" in message and "3 channels" in message and "3x32x32" in message


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pool_on_a_1x1_map_is_refused(pool):
    # stride 2, padding 0: 28 -> 12 -> 6 -> 1, and the second pool has a 1x1 map
    message = build_error(lenet(stride=2, pool=pool))
    for text in (f"model.pool={pool}", "1x1", "1x28x28", "model.stride=2"):
        assert text in message
    # without pooling the same convs are fine
    train_step(lenet(stride=2, pool="none"), MNIST)


def test_residual_body_growing_the_map_is_refused():
    # 3x3 kernel, padding 2: the body grows 28 -> 30, the shortcut cannot follow
    message = build_error(lenet(kernel_size=3, padding=2, residual=True))
    for text in ("model.residual=true", "model.padding=2", "1x28x28"):
        assert text in message


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"width": 0}, "model.width=0"),
        ({"width": -1.0}, "model.width=-1.0"),
        ({"depth": 0}, "model.depth=0"),
        ({"stride": 0}, "model.stride=0"),
        ({"stride": -2}, "model.stride=-2"),
        ({"dilation": 0}, "model.dilation=0"),
        ({"groups": 0}, "model.groups=0"),
        ({"bottleneck": 0}, "model.bottleneck=0"),
        ({"kernel_size": 0}, "model.kernel_size=0"),
        ({"kernel_size": -3}, "model.kernel_size=-3"),
        ({"kernel_size": [3, 0]}, "model.kernel_size=[3, 0]"),
        ({"kernel_size": [3, 3, 3]}, "model.kernel_size=[3, 3, 3]"),
        ({"padding": -1}, "model.padding=-1"),
        ({"padding": "full"}, "model.padding='full'"),
        ({"channels": [6, 0]}, "model.channels=0"),
        ({"fc": [120, -1]}, "model.fc=-1"),
    ],
)
def test_bad_sizes_fail_when_the_config_is_made(kwargs, key):
    with pytest.raises(ConfigError) as e:
        LeNetConfig(**kwargs)
    assert key in str(e.value)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"width": 0}, "model.width=0"), ({"hidden": [128, 0]}, "model.hidden=0")],
)
def test_bad_mlp_sizes_fail_when_the_config_is_made(kwargs, key):
    with pytest.raises(ConfigError) as e:
        MLPConfig(**kwargs)
    assert key in str(e.value)


def test_bad_sizes_from_yaml_fail_before_the_model_is_built():
    with pytest.raises(ConfigError, match="model.depth=0"):
        compose_model("model=lenet5_deep", "model.depth=0")


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("model.activation=swish", "relu"),
        ("model.pool=min", "max"),
        ("model.norm=weight", "batch"),
    ],
)
def test_bad_enum_values_fail_at_compose_time(override, allowed):
    with pytest.raises(ConfigCompositionException) as e:
        compose_model(override)
    key, value = override.split("=")
    message = f"{e.value} {e.value.__cause__}"
    assert key in message and value in message and allowed in message


def test_bad_enum_value_in_code_names_the_key():
    with pytest.raises(ValueError, match="model.activation='swish'.*relu"):
        build_model(replace(LeNetConfig(), activation="swish"), MNIST, 10)


def test_summary_names_the_layers():
    assert summary(build_model(LeNetConfig(), MNIST, 10)) == (
        "conv1-6k5x5 relu maxpool conv6-16k5x5 relu maxpool fc256-120 relu fc120-84 relu fc84-10"
    )
    assert summary(build_model(MLPConfig(), MNIST, 10)) == "fc784-128 relu fc128-10"
    text = summary(
        build_model(lenet(norm="batch", stride=2, padding="same", dilation=2), CIFAR, 10)
    )
    assert "conv3-6k5x5 s2 d2 batchnorm relu" in text
    text = summary(build_model(lenet(factorize=True, bottleneck=4, pool="avg"), MNIST, 10))
    assert text.startswith("conv1-4k1x1 relu conv4-6k5x1 conv6-6k1x5 relu avgpool")
    assert summary(build_model(compose_model("model=resnet_small"), MNIST, 10)).startswith(
        "residual: conv1-16k3x3 batchnorm relu conv16-16k3x3 batchnorm conv1-16k1x1 batchnorm relu"
    )


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (LeNetConfig(), 2),
        (lenet(depth=2), 4),
        (lenet(factorize=True), 2),  # a factorized pair counts once
        (lenet(bottleneck=4), 2),  # 1x1 convs are not counted
        (lenet(channels=[16, 32, 64], depth=2, kernel_size=3, padding="same", residual=True), 6),
        (MLPConfig(), 0),
    ],
)
def test_count_conv_layers(cfg, expected):
    assert count_conv_layers(build_model(cfg, MNIST, 10)) == expected


def test_count_conv_layers_of_presets():
    assert count_conv_layers(build_model(compose_model("model=lenet5"), MNIST, 10)) == 2
    assert count_conv_layers(build_model(compose_model("model=lenet5_deep"), MNIST, 10)) == 4


def test_each_norm_and_activation_has_its_own_summary():
    # the summary names layers by class: two choices must never read the same
    for table, key in ((NORMS, "norm"), (ACTIVATIONS, "activation")):
        texts = [summary(build_model(lenet(**{key: name}), MNIST, 10)) for name in table]
        assert len(set(texts)) == len(texts), texts
    layer, group = (summary(build_model(lenet(norm=n), MNIST, 10)) for n in ("layer", "group"))
    assert "layernorm" in layer and "groupnorm" in group


def test_lenet5_in_1d_params_and_summary():
    model = build_model(LeNetConfig(), SERIES, 2)
    assert count_params(model) == LENET5_1D == 51_306
    assert summary(model) == (
        "conv1-6k5 relu maxpool conv6-16k5 relu maxpool fc336-120 relu fc120-84 relu fc84-2"
    )
    assert count_conv_layers(model) == 2
    assert all(not isinstance(m, torch.nn.Conv2d | torch.nn.MaxPool2d) for m in model.modules())


def test_mlp_flattens_a_series():
    model = build_model(MLPConfig(), (3, 50), 4)
    assert count_params(model) == (150 * 128 + 128) + (128 * 4 + 4)
    train_step(MLPConfig(), (3, 50), classes=4)


@pytest.mark.parametrize("shape", [SERIES, (3, 140)], ids=["1x96", "3x140"])
@pytest.mark.parametrize("knob, value", KNOB_VALUES_1D, ids=[f"{k}={v}" for k, v in KNOB_VALUES_1D])
def test_every_knob_value_trains_in_1d(knob, value, shape):
    model = train_step(lenet(**{knob: value}), shape, classes=2)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize(
    "combo",
    [
        c
        for c in COMBINATIONS
        if not c.get("factorize") and not isinstance(c.get("kernel_size"), list)
    ],
)
def test_combinations_train_in_1d(combo):
    train_step(lenet(**combo), SERIES, classes=2)


def test_1d_knobs_change_what_they_should():
    # batch norm in 1-D: BatchNorm1d, conv bias off; 'same' keeps the length
    model = build_model(lenet(norm="batch", padding="same"), SERIES, 2)
    assert "batchnorm" in summary(model)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert summary(model).endswith("fc384-120 relu fc120-84 relu fc84-2")  # 96 -> 48 -> 24
    # dilation and stride show in the summary as in 2-D
    text = summary(build_model(lenet(stride=2, dilation=2, padding="same"), (1, 500), 2))
    assert text.startswith("conv1-6k5 s2 d2 relu maxpool")
    # residual with a projection shortcut, cropped to the body in 1-D too
    train_step(lenet(residual=True, kernel_size=3), SERIES, classes=2)


def test_factorize_on_1d_is_refused_in_one_line():
    message = build_error(lenet(factorize=True), SERIES)
    assert "model.factorize" in message and "1x96" in message and "\n" not in message


def test_a_2d_kernel_on_1d_data_is_refused():
    message = build_error(lenet(kernel_size=[3, 5]), SERIES)
    assert "model.kernel_size=[3, 5]" in message and "1x96" in message


def test_1d_map_shrinking_below_1_is_refused():
    # 24 -> 20 -> 10 -> 6 -> 3 -> a 5 kernel cannot fit in stage 3
    message = build_error(lenet(channels=[6, 16, 32]), (1, 24))
    assert "stage 3" in message and "1x24" in message and "model.kernel_size=5" in message


def test_1d_pool_on_a_length_1_map_is_refused():
    # stride 2, padding 0: 30 -> 13 -> 6 -> 1, and the second pool has a map of length 1
    message = build_error(lenet(stride=2), (1, 30))
    assert "model.pool=max" in message and "1x30" in message


def test_1d_residual_body_growing_the_map_is_refused():
    message = build_error(lenet(kernel_size=3, padding=2, residual=True), SERIES)
    assert "model.residual=true" in message and "1x96" in message


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


def test_inspect_shows_the_new_layers(tmp_path, run_main):
    args = ["model.activation=tanh", "model.dropout=0.5", "data=synthetic", "--format", "json"]
    result = run_main(tmp_path, "inspect", *args)
    assert result.returncode == 0, result.stderr
    types = [layer["type"] for layer in json.loads(result.stdout)["layers"]]
    assert "Tanh" in types and types.count("Dropout") == 2


def test_bad_dropout_on_the_command_line(tmp_path, run_main):
    result = run_main(tmp_path, "train", *QUICK, "model.dropout=1.0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.dropout=1.0" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("name", "overrides", "shape"), list(cases()), ids=lambda c: str(c))
def test_every_preset_and_variant_is_built_as_planned(name, overrides, shape):
    cfg = composed(*overrides)
    assert_model_follows(plan(cfg, shape, 10), build_model(cfg, shape, 10), cfg)


@pytest.mark.parametrize(("knobs", "shape"), EXTRAS, ids=lambda c: str(c))
def test_residual_depth_and_1d_models_are_built_as_planned(knobs, shape):
    cfg = LeNetConfig(**knobs)
    assert_model_follows(plan(cfg, shape, 7), build_model(cfg, shape, 7), cfg)


def test_the_plan_allocates_nothing_and_needs_no_torch_module():
    cfg = LeNetConfig()
    shape = plan(cfg, (1, 28, 28), 10)
    assert [c.size_out for s in shape.stages for c in s.convs] == [(24, 24), (8, 8)]
    assert [s.pooled_size for s in shape.stages] == [(12, 12), (4, 4)]
    assert shape.flat == 16 * 4 * 4 and shape.dense == ((256, 120), (120, 84), (84, 10))
    assert plan(MLPConfig(), (1, 28, 28), 10).dense == ((784, 128), (128, 10))


@pytest.mark.parametrize(
    ("knobs", "shape"),
    [
        ({"kernel_size": 9}, (1, 12, 12)),  # shrinks below 1x1
        ({"channels": [6, 16, 32, 64]}, (1, 28, 28)),  # a pool cannot halve 1x1
        ({"norm": "group", "groups": 4}, (1, 28, 28)),  # 4 does not divide 6
        ({"residual": True, "padding": 4}, (1, 28, 28)),  # the body grows the map
        ({"factorize": True}, (2, 60)),  # 2-D only
        ({}, (1, 4, 4, 4)),  # three spatial axes
    ],
)
def test_plan_refuses_what_building_refuses_with_the_same_message(knobs, shape):
    cfg = LeNetConfig(**knobs)
    with pytest.raises(ConfigError) as planned:
        plan(cfg, shape, 10)
    with pytest.raises(ConfigError) as built:
        build_model(cfg, shape, 10)
    assert str(planned.value) == str(built.value)


@pytest.mark.parametrize("name", list(KEYS))
def test_state_dict_keys_are_those_checkpoints_hold(name):
    cfg, shape, layers, params = KEYS[name]
    model = build_model(cfg, shape, 10)
    assert {key.rsplit(".", 1)[0] for key in model.state_dict()} == set(layers)
    assert count_params(model) == params


def test_resnet_small_keys_are_those_checkpoints_hold():
    model = build_model(composed("model=resnet_small"), (3, 32, 32), 10)
    convs = [f"features.{s}.body.{b}" for s in (0, 2, 4) for b in (0, 1)]
    convs += [f"features.{s}.shortcut" for s in (0, 2, 4)]
    norm = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = [f"{c}.{i}.{k}" for c in convs for i, ks in ((0, ["weight"]), (1, norm)) for k in ks]
    assert sorted(model.state_dict()) == sorted([*expected, "classifier.1.weight",
                                                 "classifier.1.bias"])  # fmt: skip
    assert count_params(model) == 85386


@pytest.mark.parametrize(
    ("overrides", "shape"),
    [
        (("model=lenet5",), (1, 28, 28)),
        (("model=resnet_small",), (3, 32, 32)),
        (("model=mlp",), (1, 28, 28)),
        (("variant=factorize",), (1, 28, 28)),
        (("model=lenet5_deep", "model.bottleneck=4", "model.norm=batch"), (2, 60)),
    ],
)
def test_inspect_model_gives_the_same_on_a_meta_device_model(overrides, shape):
    cfg = composed(*overrides)
    real = build_model(cfg, shape, 10)
    with torch.device("meta"):
        meta = build_model(cfg, shape, 10)
    assert next(meta.parameters()).is_meta
    assert inspect_model(meta, shape) == inspect_model(real, shape)


def test_group_norm_is_checked_on_the_channels_it_normalises(capfd):
    """With branches the bottleneck sits inside each branch, where no norm acts."""
    args = ["data=digits", "model.branches=[1,3,5]", "model.bottleneck=3"]
    capfd.readouterr()
    assert cli.main(["inspect", *args, "model.norm=group", "model.groups=2"]) == 0
    assert "error" not in capfd.readouterr().err
    cfg = LeNetConfig(branches=[1, 3, 5], bottleneck=3, norm="group", groups=2)
    assert build_model(cfg, (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # without branches the bottleneck's own block has a norm: 3 channels, 2 groups
    with pytest.raises(ConfigError, match="model.groups=2 does not divide 3 channels"):
        build_model(LeNetConfig(bottleneck=3, norm="group", groups=2), (1, 28, 28), 10)
