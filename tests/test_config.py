"""Composing configs/ the way `cnnlab train` does (Hydra's compose API, in-process): every
option of every group composes into the schema dataclasses, the default is the chapter's
example, and typos, wrong types and out-of-range values are refused before any data loads."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import cnnlab.hydra_app  # conftest calls its setup(): the schemas in Hydra's ConfigStore
from cnnlab import data
from cnnlab.config import LeNetConfig, MLPConfig, TrainConfig, TrainerConfig
from cnnlab.outcome import ConfigError

CONFIGS = cnnlab.hydra_app.config_dir()

# the presets the README's commands and the chapter's exercises use: each must exist and compose
REQUIRED = {
    "model": ["mlp", "lenet5", "lenet5_wide", "lenet5_deep", "resnet_small"],
    "data": ["mnist", "fashion_mnist", "digits", "synthetic", "cifar10"],
    "trainer": ["default", "fast"],
}


# groups whose options need a Hydra plugin from the [cluster] extra
PLUGINS = {"hparams_search": "hydra_plugins.hydra_optuna_sweeper"}


def options(group: str) -> list[str]:
    folder = Path(CONFIGS) / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def every_option() -> list[tuple[str, str]]:
    """The required options plus whatever else configs/ holds, group by group (experiment/,
    hparams_search/, variant/, ...): a new preset file is tested the day it is added."""
    groups = sorted({*REQUIRED, *(p.name for p in Path(CONFIGS).iterdir() if p.is_dir())})
    return [(g, o) for g in groups for o in sorted({*REQUIRED.get(g, []), *options(g)})]


def compose_train(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def error_text(e: BaseException) -> str:
    """The message of an error and of every error behind it, as Hydra prints them."""
    parts = []
    while e is not None and len(parts) < 10:
        parts.append(str(e))
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def test_config_dir_is_the_source_tree_configs():
    assert (CONFIGS / "train.yaml").is_file()
    for group, names in REQUIRED.items():
        for name in names:
            assert (CONFIGS / group / f"{name}.yaml").is_file(), f"{group}/{name}.yaml is missing"


@pytest.mark.parametrize(("group", "option"), every_option(), ids=lambda v: str(v))
def test_every_option_composes_into_the_schemas(group, option, tmp_path, monkeypatch):
    if group in PLUGINS:
        pytest.importorskip(PLUGINS[group], reason=f"{group} needs pip install 'cnnlab[cluster]'")
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    # what `cnnlab train` composes: Hydra's own node too (run dir, sweeper overrides)
    assert compose_train(f"{group}={option}", hydra=True).hydra.job.name == "train"
    cfg = compose_train(f"{group}={option}")
    plain = OmegaConf.to_object(cfg)  # runs every __post_init__ range check too
    assert isinstance(plain, TrainConfig)
    assert type(plain.model) is (MLPConfig if plain.model.name == "mlp" else LeNetConfig)
    assert type(plain.data) is data.source(plain.data).schema  # ucr, image_folder: their own
    assert type(plain.trainer) is TrainerConfig
    assert plain.data.root == str(tmp_path)  # data.root follows CNNLAB_DATA
    if group == "model":
        assert plain.model.name == option
    if group == "data":
        assert (plain.data.source or plain.data.name) == option  # ucr's name is the set's
    if group == "trainer":
        assert plain.trainer.epochs == {"default": 5, "fast": 1}.get(option, plain.trainer.epochs)


def test_presets_change_only_their_knob():
    base = OmegaConf.to_object(compose_train().model)
    wide = OmegaConf.to_object(compose_train("model=lenet5_wide").model)
    deep = OmegaConf.to_object(compose_train("model=lenet5_deep").model)
    assert (wide.width, wide.depth) == (2.0, 1)
    assert (deep.width, deep.depth) == (1.0, 2)
    for preset in (wide, deep):
        assert (preset.channels, preset.fc, preset.kernel_size) == (
            base.channels,
            base.fc,
            base.kernel_size,
        )


def test_default_is_the_chapters_worked_example(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    cfg = OmegaConf.to_object(compose_train())
    assert type(cfg.model) is LeNetConfig
    m = cfg.model
    assert (m.name, m.channels, m.fc, m.width, m.depth) == ("lenet5", [6, 16], [120, 84], 1.0, 1)
    assert (m.kernel_size, m.stride, m.padding, m.dilation) == (5, 1, 0, 1)
    assert (m.activation, m.pool, m.norm) == ("relu", "max", "none")
    assert not (m.factorize or m.residual) and m.bottleneck is None
    assert (cfg.data.name, cfg.data.normalize, cfg.data.download) == ("mnist", [0.5, 0.5], True)
    t = cfg.trainer
    assert (t.epochs, t.batch_size, t.eval_batch_size) == (5, 64, 1000)
    assert (t.optimizer, t.lr, t.progress) == ("adam", 0.001, True)
    assert cfg.device == "auto"
    assert cfg.seed == 0


def test_mlp_is_the_chapters_mlp():
    m = OmegaConf.to_object(compose_train("model=mlp").model)
    assert (m.name, m.hidden, m.activation, m.width) == ("mlp", [128], "relu", 1.0)


def test_data_root_defaults_to_data_without_cnnlab_data(monkeypatch):
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    assert OmegaConf.to_object(compose_train()).data.root == "data"


# ---- errors at compose time -----------------------------------------------------------------

COMPOSE_ERRORS = {
    "model.widht=2": ["widht"],
    "trainer.epochs=abc": ["trainer.epochs", "abc"],
    "model.activation=swish": ["model.activation", "swish", "relu"],  # allowed ones listed
    "data=nosuch": ["nosuch", "digits"],  # available options listed
    "model.width=wide": ["model.width", "wide"],
    "trainer.lr=fast": ["trainer.lr", "fast"],
    "trainer.optimizer=adamm": ["trainer.optimizer", "adamm", "adam"],
    "model.pool=median": ["model.pool", "median"],
    "data.normalise=[0,1]": ["normalise"],
}


@pytest.mark.parametrize(("override", "named"), COMPOSE_ERRORS.items(), ids=list(COMPOSE_ERRORS))
def test_bad_override_fails_at_compose_time_naming_it(override, named):
    with pytest.raises((HydraException, OmegaConfBaseException)) as e:
        compose_train(override)
    text = error_text(e.value)
    for word in named:
        assert word in text, f"{word!r} not in the error for {override}:\n{text}"


def test_a_wrong_option_lists_the_yaml_files_and_no_schema():
    for group in REQUIRED:
        with pytest.raises(HydraException) as e:
            compose_train(f"{group}=nosuch")
        text = error_text(e.value)
        offered = text[text.index("Available options") : text.index("Config search path")]
        assert all(option in offered for option in options(group)), text
        assert "schema" not in offered, text


def test_mlp_rejects_lenet_only_keys():
    with pytest.raises((HydraException, OmegaConfBaseException)) as e:
        compose_train("model=mlp", "model.depth=2")
    assert "depth" in error_text(e.value)


# ---- range checks: when the config becomes the dataclasses, before any data loads ------------

RANGE_ERRORS = {
    "trainer.lr=0": ("trainer.lr", "> 0"),
    "trainer.lr=-0.1": ("trainer.lr", "> 0"),
    "trainer.epochs=-1": ("trainer.epochs", ">= 0"),
    "trainer.batch_size=0": ("trainer.batch_size", "> 0"),
    "trainer.eval_batch_size=0": ("trainer.eval_batch_size", "> 0"),
    "model.width=0": ("model.width", "> 0"),
    "model.depth=0": ("model.depth", "> 0"),
    "data.normalize=[0.5,0]": ("data.normalize", "std > 0"),
}


@pytest.mark.parametrize(("override", "expected"), RANGE_ERRORS.items(), ids=list(RANGE_ERRORS))
def test_out_of_range_value_is_a_config_error_naming_key_value_and_rule(override, expected):
    key, rule = expected
    cfg = compose_train(override)  # the types are right, so composing works
    with pytest.raises(ConfigError) as e:
        OmegaConf.to_object(cfg)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(key + "="), message
    assert rule in message, message


def test_zero_epochs_is_allowed():
    assert OmegaConf.to_object(compose_train("trainer.epochs=0")).trainer.epochs == 0


def test_schemas_work_without_hydra():
    """Plain dataclasses: a notebook builds them directly, with the same checks."""
    assert TrainerConfig().lr == 0.001
    assert LeNetConfig(kernel_size=[3, 5]).kernel_size == (3, 5)
    with pytest.raises(ConfigError, match=r"trainer\.batch_size=0"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ConfigError, match="model.padding='full'"):
        LeNetConfig(padding="full")
