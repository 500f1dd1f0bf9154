"""models.plan: the shape plan that LeNet and the MLP are built from, checked against the
models built from it (every conv's sizes, the flattened size, the dense layers), the
state_dict keys checkpoints depend on, and inspect_model on a meta-device model."""

from functools import cache
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from cnnlab.config import LeNetConfig, MLPConfig
from cnnlab.hydra_app import setup
from cnnlab.inspection import inspect_model
from cnnlab.layers import Branches
from cnnlab.models import Plan, build_model, count_params, plan
from cnnlab.outcome import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
VARIANTS = sorted(p.stem for p in (CONFIGS / "variant").glob("*.yaml"))
SHAPES = [(1, 28, 28), (3, 32, 32)]
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
