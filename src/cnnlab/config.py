"""Config schemas: one dataclass per config group (hydra_app.setup() puts them in Hydra's
ConfigStore).

The YAML files under configs/ name these schemas in their defaults lists, so Hydra
checks every key and type at compose time: `model.widht=2` or `trainer.epochs=abc`
fails before any data loads. Choices are StrEnums so an unknown value is refused with
the allowed ones listed. Range checks (lr > 0, ...) live in __post_init__ and run when
checks.py turns the config into these objects, still before any data loads.

Nothing here imports Hydra: models, data and run.py take these plain
dataclasses, so they work from a notebook too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from cnnlab.outcome import ConfigError
from cnnlab.ranges import (
    dropout_rate,
    int_or_pair,
    layers,
    positive,
    refuse_non_finite,
    thread_count,
)


class Activation(StrEnum):
    relu = "relu"
    leaky_relu = "leaky_relu"
    gelu = "gelu"
    sigmoid = "sigmoid"  # the chapter contrasts ReLU with these two (vanishing gradients)
    tanh = "tanh"


class Pool(StrEnum):
    max = "max"
    avg = "avg"
    none = "none"


class Norm(StrEnum):
    none = "none"
    batch = "batch"
    layer = "layer"
    instance = "instance"
    group = "group"
    lrn = "lrn"


class Optimizer(StrEnum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Keep(StrEnum):
    last = "last"  # the weights of the last epoch
    best = "best"  # the weights of the epoch with the highest validation accuracy


class Precision(StrEnum):
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"


# Keys that say how a run runs, not what it trains ("logger" covers logger.*). Run-folder
# names, compare's columns and groups, and the resume check all leave them out. Hydra's
# exclude_keys (run-folder names) match keys exactly: hence logger's keys one by one too.
RUN_SETTINGS = (
    "device", "resume", "logger", "logger.tracking_uri", "logger.experiment",
    "data.root", "data.download", "data.mirror",
    "trainer.progress", "trainer.log_every", "trainer.checkpoint", "trainer.eval_batch_size",
    "trainer.threads", "pictures", "baseline", "claim", "measures",
)  # fmt: skip
# The measurements taken after training, each a pass over data (measures.py): shift_accuracy
# (the test set at 4 shifts), dead_units (the test set once more), train_accuracy (a sample
# of the training set; generalization_gap with it). grad_ratio and epoch1_accuracy cost
# nothing after training and are always there.
AFTER_TRAINING = ("shift_accuracy", "dead_units", "train_accuracy")
# Repeats of one experiment: runs that differ only in these are grouped (mean, std, n).
REPEAT_KEYS = ("seed", "seeds")


def is_run_setting(key: str) -> bool:
    """True for a key of RUN_SETTINGS or one below it (logger.tracking_uri)."""
    return any(key == k or key.startswith(k + ".") for k in RUN_SETTINGS)


# What a resumed run may change: how long it trains, its learning rate, its batch size (it
# goes on at the image of the epoch where it stopped) and its patience. Everything else that
# is not a run setting must match the checkpoint.
RESUMABLE_CHANGES = ("trainer.epochs", "trainer.lr", "trainer.batch_size", "trainer.patience")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"width": 2}} -> {"model.width": 2}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: Activation = Activation.relu
    negative_slope: float = 0.05
    width: float = 1.0
    dropout: float = 0.0  # after each hidden dense layer's activation; 0: none

    def __post_init__(self):
        positive("model.width", self.width)
        dropout_rate("model.dropout", self.dropout)
        for h in self.hidden:
            positive("model.hidden", h)
        layers("model.hidden", len(self.hidden), self.hidden)


@dataclass
class LeNetConfig:
    name: str = "lenet5"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    fc: list[int] = field(default_factory=lambda: [120, 84])
    width: float = 1.0
    depth: int = 1
    kernel_size: Any = 5  # int or [h, w]
    stride: int = 1
    padding: Any = 0  # int, "same" or "valid"
    dilation: int = 1
    activation: Activation = Activation.relu
    negative_slope: float = 0.05  # the chapter plots leaky ReLU with alpha 0.05
    pool: Pool = Pool.max
    norm: Norm = Norm.none
    groups: int = 2  # for norm=group
    factorize: bool = False
    bottleneck: int | None = None
    residual: bool = False
    branches: list[int] | None = None  # kernel sizes of parallel convs per stage (Inception)
    branch_pool: bool = False  # with branches: a 3x3 max pool then 1x1 conv branch too
    dropout: float = 0.0  # after each hidden dense layer's activation; 0: none

    def __post_init__(self):
        dropout_rate("model.dropout", self.dropout)
        # Deeper checks that need the input size (a map shrinking below 1x1, groups not
        # dividing the channels) happen in models.py, where that size is known.
        self.kernel_size = int_or_pair("model.kernel_size", self.kernel_size)  # lists: tuples
        if not self.channels:
            raise ConfigError(
                "model.channels=[] is not allowed: the LeNet family needs at least one conv "
                "stage (model=mlp has none)"
            )
        for c in self.channels:
            positive("model.channels", c)
        for units in self.fc:
            positive("model.fc", units)
        positive("model.width", self.width)
        positive("model.depth", self.depth)
        layers("model.depth", self.depth * len(self.channels), self.depth)
        layers("model.fc", len(self.fc), self.fc)
        positive("model.stride", self.stride)
        positive("model.dilation", self.dilation)
        positive("model.groups", self.groups)
        if self.bottleneck is not None:
            positive("model.bottleneck", self.bottleneck)
        self._check_branches()
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ConfigError(
                    f"model.padding={self.padding!r} is not allowed: use an int >= 0, "
                    f"[h, w], 'same' or 'valid'"
                )
        else:
            self.padding = int_or_pair("model.padding", self.padding, allow_zero=True)

    def _check_branches(self):
        if self.branches is None:
            if self.branch_pool:
                raise ConfigError("model.branch_pool=true needs model.branches (kernel sizes)")
            return
        self.branches = list(self.branches)
        if not self.branches:
            raise ConfigError(
                "model.branches=[] is not allowed: give kernel sizes, e.g. [1, 3, 5], or null"
            )
        for k in self.branches:
            if not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ConfigError(
                    f"model.branches={self.branches}: kernel {k} is not allowed: branches "
                    f"need odd kernel sizes >= 1 so 'same' padding aligns their maps"
                )
        if self.factorize:
            raise ConfigError(
                f"model.factorize=true cannot be combined with model.branches={self.branches}: "
                f"use one of them"
            )


@dataclass
class DataConfig:
    # The source (cnnlab.data.SOURCES) that reads this schema; None: data.name names the
    # source (mnist, ...). Schemas whose data.name names something else (a UCR set) set their own.
    source: ClassVar[str | None] = None

    name: str = "mnist"
    root: str = "${oc.env:CNNLAB_DATA,data}"
    download: bool = True
    # [mean, std], or "auto": per-channel mean and std of the training data (data.load
    # works them out). Typed Any because a schema field cannot be a list or a string.
    normalize: Any = field(default_factory=lambda: [0.5, 0.5])
    mirror: str | None = None  # base URL of an IDX mirror, used instead of torchvision's
    train_size: int | None = None  # a fixed sample of N images, stratified by class
    test_size: int | None = None
    # a share of the training images held out to choose on (stratified, seeded by val_seed
    # alone: the same images whatever the run's seed); 0: none, the chapter's setting
    val_fraction: float = 0.0
    val_seed: int = 0

    def __post_init__(self):
        if isinstance(self.normalize, tuple):
            self.normalize = list(self.normalize)
        if self.normalize != "auto" and not (
            isinstance(self.normalize, list)
            and len(self.normalize) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.normalize)
            and self.normalize[1] > 0
        ):
            raise ConfigError(
                f"data.normalize={self.normalize!r} is not allowed: use [mean, std] with "
                f"std > 0, or auto (mean and std of the training data)"
            )
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None:
                positive(f"data.{key}", getattr(self, key))
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} is not allowed: use 0 (no validation) "
                f"or a share of the training images below 1, e.g. 0.1"
            )
        # the share's count is checked on the source's real training set (data.check)
        if not 0 <= self.val_seed < 2**32:
            raise ConfigError(f"data.val_seed={self.val_seed} is not allowed: use 0..{2**32 - 1}")


@dataclass
class SyntheticDataConfig(DataConfig):
    name: str = "synthetic"
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # channels, h, w (or length)
    classes: int = 10
    train_size: int | None = 512
    test_size: int | None = 256

    def __post_init__(self):
        super().__post_init__()
        if len(self.shape) not in (2, 3) or min(self.shape) < 1:
            raise ConfigError(
                f"data.shape={self.shape} is not allowed: use [channels, h, w] (images) or "
                f"[channels, length] (series), each >= 1"
            )
        positive("data.classes", self.classes)
        for key in ("train_size", "test_size"):  # null (the whole set) means no count here
            if getattr(self, key) is None:
                raise ConfigError(
                    f"data.{key}=null is not allowed for data=synthetic: give the number of "
                    f"images to generate, a whole number >= 1"
                )


@dataclass
class UcrDataConfig(DataConfig):
    """A set of the UCR time series archive (2018): data.name is the archive's name."""

    source: ClassVar[str] = "ucr"

    name: str = "ECG200"
    normalize: Any = field(default_factory=lambda: [0.0, 1.0])  # floats: (x - 0) / 1
    znorm: bool = True  # z-normalise each series on its own (mean 0, std 1), as the archive


@dataclass
class ImageFolderDataConfig(DataConfig):
    """The user's own images: one sub-folder per class, or train/ and test/ each so."""

    source: ClassVar[str] = "image_folder"

    name: str = "image_folder"
    path: str | None = None  # the folder (data/image_folder.py refuses a run without it)
    image_size: Any = 28  # int or [h, w]: every image is resized to this
    channels: int = 1  # 1 (grey) or 3 (RGB)
    test_fraction: float = 0.2  # held out per class when there is no test/ folder
    normalize: Any = "auto"

    def __post_init__(self):
        super().__post_init__()
        self.image_size = int_or_pair("data.image_size", self.image_size)
        if self.channels not in (1, 3):
            raise ConfigError(
                f"data.channels={self.channels} is not allowed: use 1 (grey) or 3 (RGB)"
            )
        if not 0 < self.test_fraction < 1:
            raise ConfigError(
                f"data.test_fraction={self.test_fraction} is not allowed: it must be "
                f"between 0 and 1 (exclusive)"
            )


@dataclass
class TrainerConfig:
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1000
    optimizer: Optimizer = Optimizer.adam
    lr: float = 0.001
    progress: bool = True
    log_every: int = 50  # steps between reads of the loss (each read syncs with the device)
    # capture the whole training step on CUDA: auto | true | false (a str, not an enum: the
    # command line reads true and false as booleans, which an enum of strings refuses)
    cuda_graph: str = "auto"
    compile: bool = False
    precision: Precision = Precision.fp32
    deterministic: bool = False
    checkpoint: bool = True
    # CPU intra-op threads: auto (torch's count, fewer on busy cores; threads.py) or a
    # number. Any, not int | str: a schema field cannot be a union.
    threads: Any = "auto"
    keep: Keep = Keep.last  # which epoch's weights the test figures come from
    patience: int | None = None  # stop after N epochs without a better validation accuracy

    def __post_init__(self):
        positive("trainer.epochs", self.epochs, allow_zero=True)
        positive("trainer.batch_size", self.batch_size)
        positive("trainer.eval_batch_size", self.eval_batch_size)
        positive("trainer.lr", self.lr)
        positive("trainer.log_every", self.log_every)
        self.cuda_graph = str(self.cuda_graph).lower()  # True from the command line -> "true"
        if self.cuda_graph not in ("auto", "true", "false"):
            raise ConfigError(
                f"trainer.cuda_graph={self.cuda_graph} is not allowed: use auto, true or false"
            )
        if self.patience is not None:
            positive("trainer.patience", self.patience)
        self.threads = thread_count("trainer.threads", self.threads)


# ---- logger: where a run's params and metrics go besides its folder (loggers.py)


@dataclass
class NoLoggerConfig:
    name: str = "none"


@dataclass
class TensorBoardLoggerConfig:
    name: str = "tensorboard"  # scalars in <run>/tensorboard


@dataclass
class MLflowLoggerConfig:
    name: str = "mlflow"
    # an SQLite database, not MLflow's file store (deprecated, refused by MLflow 3.13+)
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str | None = None  # default: the sweep folder for a sweep's jobs, else "cnnlab"


# what `device` may name (README: top-level keys); whether that device is there is
# devices.resolve_device's
DEVICE_NAMES = r"auto|cpu|mps|cuda(:[0-9]+)?"


@dataclass
class TrainConfig:
    model: Any = None  # MLPConfig or LeNetConfig, chosen by the model group
    data: Any = None  # DataConfig or SyntheticDataConfig
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    device: str = "auto"
    seed: int = 0
    seeds: int = 1  # copies trained together, with seeds seed, seed+1, ..., seed+seeds-1
    resume: str | None = None  # a run folder or a checkpoint file
    logger: Any = None  # NoLoggerConfig, TensorBoardLoggerConfig or MLflowLoggerConfig
    pictures: bool = True  # filters.png and feature_maps.png (off for large sweeps)
    # the row a sweep's summary compares the others with (KEY=VALUE[,KEY=VALUE], as
    # `cnnlab compare --baseline`): each experiment preset declares one
    baseline: str | None = None
    claim: Any = None  # a claim preset's words and tests (claims.py reads them from its file)
    # what is measured after training (measures.py): each costs passes over the data, so a
    # claim preset takes only what its claim is judged on
    measures: list[str] = field(default_factory=lambda: list(AFTER_TRAINING))

    def __post_init__(self):
        refuse_non_finite(self)
        if not re.fullmatch(DEVICE_NAMES, str(self.device)):
            raise ConfigError(
                f"device={self.device!r} is not allowed: use auto, cpu, cuda, cuda:N (N a "
                f"GPU's index) or mps"
            )
        if not 0 <= self.seed < 2**32:  # what numpy's and torch's seeding accept
            raise ConfigError(f"seed={self.seed} is not allowed: it must be in 0..{2**32 - 1}")
        if self.seeds < 1 or self.seed + self.seeds > 2**32:
            raise ConfigError(
                f"seeds={self.seeds} is not allowed: it must be >= 1, and seed + seeds - 1 "
                f"at most {2**32 - 1}"
            )
        self._check_validation()
        unknown = [name for name in self.measures if name not in AFTER_TRAINING]
        if unknown:
            raise ConfigError(
                f"measures={list(self.measures)} is not allowed: {unknown[0]!r} is not one of "
                f"{list(AFTER_TRAINING)}"
            )
        if self.baseline is not None:
            key_values("baseline", self.baseline)
        if self.seeds > 1 and self.trainer.compile:
            raise ConfigError(
                f"seeds={self.seeds} with trainer.compile=true is not supported: several "
                f"seeds train as one stacked model (eager, or a CUDA graph on CUDA)"
            )

    def _check_validation(self):
        """Choosing an epoch needs a validation split: the test set is never chosen on."""
        wants = [
            f"{key}={value}"
            for key, value, on in (
                ("trainer.keep", self.trainer.keep, self.trainer.keep == Keep.best),
                ("trainer.patience", self.trainer.patience, self.trainer.patience is not None),
            )
            if on
        ]
        if wants and not self.data.val_fraction:
            raise ConfigError(
                f"{' and '.join(wants)} needs a validation split, and data.val_fraction=0 holds "
                f"none out: set data.val_fraction (e.g. 0.1); the test set is never chosen on"
            )


# the YAML files under configs/ name these as /<name>_schema in their defaults lists
SCHEMAS = {
    "mlp": MLPConfig,
    "lenet": LeNetConfig,
    "data": DataConfig,
    "synthetic_data": SyntheticDataConfig,
    "ucr_data": UcrDataConfig,
    "image_folder_data": ImageFolderDataConfig,
    "trainer": TrainerConfig,
    "no_logger": NoLoggerConfig,
    "tensorboard_logger": TensorBoardLoggerConfig,
    "mlflow_logger": MLflowLoggerConfig,
}


def override_text(value) -> str:
    """A config value as an override writes it: true, null, [6,16], relu, 2 (not 2.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):  # an enum's value too
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def key_values(key: str, text: str) -> dict:
    """KEY=VALUE[,KEY=VALUE] (a baseline row's settings) as {KEY: VALUE}, each value read as
    YAML reads it (1, 1.0, true, null, relu): the form of the command line's overrides."""
    import yaml

    pairs = {}
    # a value may hold commas itself (model.channels=[6,16]): split only before `key=`;
    # a space after the comma is the form compare's findings show (a, b)
    for item in re.split(r",\s*(?=[\w.+~/-]+=)", str(text).strip()):
        name, sep, value = item.strip().partition("=")
        if not (sep and name and value):
            raise ConfigError(
                f"{key}={text} is not allowed: give KEY=VALUE pairs separated by commas, "
                f"e.g. model.activation=relu or variant=baseline"
            )
        if name in pairs:
            raise ConfigError(f"{key}={text} is not allowed: {name} is given twice")
        try:
            pairs[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            pairs[name] = value
    return pairs
