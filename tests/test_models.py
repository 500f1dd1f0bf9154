"""cnnlab.models: parameter counts by hand, every knob built and trained one step, and the
invalid combinations refused at build time with the knob, its value and the input size."""

from dataclasses import replace
from functools import lru_cache

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import cnnlab.hydra_app
from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.layers import ACTIVATIONS, NORMS
from cnnlab.models import build_model, count_conv_layers, count_params, summary
from cnnlab.outcome import ConfigError

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
SHAPES = [MNIST, CIFAR]


def lenet(**kw) -> LeNetConfig:
    return LeNetConfig(**kw)


def params(cfg, shape=MNIST, classes=10) -> int:
    return count_params(build_model(cfg, shape, classes))


pytestmark = pytest.mark.usefixtures("one_thread")


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

# ---------------------------------------------------------------- parameter counts

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


# ---------------------------------------------------------------- the chapter's claims


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


# ---------------------------------------------------------------- every knob, every value

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


# ---------------------------------------------------------------- invalid combinations


def build_error(cfg, shape=MNIST) -> str:
    with pytest.raises(ConfigError) as e:
        build_model(cfg, shape, 10)
    return str(e.value)


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


# ---------------------------------------------------------------- summary and conv count


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


# ---------------------------------------------------------------- 1-D: (channels, length)

SERIES = (1, 96)  # ECG200's shape

# LeNet-5 on 1x96: 96 -> 92 -> 46 -> 42 -> 21, so 16 * 21 = 336 dense inputs
LENET5_1D = (6 * 1 * 5 + 6) + (16 * 6 * 5 + 16) + (336 * 120 + 120) + (120 * 84 + 84) + (84 * 2 + 2)


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


KNOB_VALUES_1D = [(k, v) for k, v in KNOB_VALUES if (k, v) not in (("factorize", True),)]
KNOB_VALUES_1D = [(k, v) for k, v in KNOB_VALUES_1D if not isinstance(v, list)]


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
