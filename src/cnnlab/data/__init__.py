"""Datasets as tensors: source files -> uint8 tensors -> normalised tensors on the device.

A dataset the size of MNIST is 47 MB as uint8, so it is loaded once, normalised once and
kept on the training device; batches are slices of a permutation (loop.py). There are no
per-sample transforms and no DataLoader workers: for data this small they cost more than
the model does (see benchmarks/). Images are uint8 (N x C x H x W); time series are
float32 (N x C x length), since their values are not bytes.

The package holds one module per source, as torchvision's datasets do: idx (MNIST,
Fashion-MNIST), builtin (CIFAR-10, digits, synthetic), ucr, image_folder; beside them
base (Dataset, DataError, read_once), download (fetch) and tensors (to_device). This
module is the registry and what the rest of cnnlab calls: spec, load, SOURCES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.config import DataConfig, ImageFolderDataConfig, SyntheticDataConfig, UcrDataConfig
from cnnlab.data.base import DataError, Dataset
from cnnlab.data.builtin import (
    CIFAR10_COUNTS,
    CIFAR10_TEST_COUNTS,
    cifar_files,
    cifar_spec,
    load_cifar10,
    load_digits,
    synthetic,
    synthetic_spec,
)
from cnnlab.data.idx import DIGITS, idx_counts, idx_spec, load_idx_dataset, present_files
from cnnlab.data.image_folder import image_folder_counts, image_folder_spec, load_image_folder
from cnnlab.data.tensors import channel_stats, free_memory, to_device
from cnnlab.data.ucr import load_ucr, ucr_counts, ucr_spec
from cnnlab.outcome import ConfigError

# this module's own names, and the four of its submodules' that the rest of cnnlab reaches
# through it; anything else is imported from the module that defines it
__all__ = [
    "SAMPLE_SEED", "SOURCES", "DataError", "Dataset", "Source", "check", "fixed", "free_memory",
    "load", "sample", "source", "spec", "split", "to_device", "validation_split",
]  # fmt: skip


@dataclass(frozen=True)
class Source:
    """A dataset name's jobs: its input shape and class names, known without a data load
    (so a model can be built and checked before any data loads: most know them by heart,
    UCR sets read their training labels, image folders list their class folders); its
    training and test images per class, which a run's check splits as load() will; its
    loader; and `fetch`, which a run's check calls to have the files at hand (downloaded
    if missing), where spec does not. `schema` is the config class its keys come from."""

    spec: Callable[[DataConfig], tuple[tuple[int, ...], list[str]]]
    load: Callable[[DataConfig], Dataset]
    counts: Callable[[DataConfig], tuple[list[int], list[int]]]
    schema: type = DataConfig
    fetch: Callable[[DataConfig], object] | None = None


def fixed(*known):
    return lambda cfg: known


def loaded_counts(load_source: Callable[[DataConfig], Dataset]):
    """Counts from the loaded set, for the sources whose load is cheap (digits: a cached
    file; synthetic data: generated)."""

    def counts(cfg: DataConfig) -> tuple[list[int], list[int]]:
        ds = load_source(cfg)
        n = len(ds.classes)
        return tuple(torch.bincount(y, minlength=n).tolist() for y in (ds.y_train, ds.y_test))

    return counts


def spec(cfg: DataConfig) -> tuple[tuple[int, ...], list[str]]:
    return source(cfg).spec(cfg)


def check(cfg: DataConfig, classes: list[str]) -> None:
    """What a run needs of its data before its folder exists, beyond spec: the files at
    hand (MNIST, Fashion-MNIST and CIFAR-10 are downloaded here when missing, so a download
    that fails leaves no run folder), and, where data.train_size or data.val_fraction cut
    the training set, that cut made on the source's real counts: refused if it holds out
    nothing or everything, or leaves out of training a class the test set holds. `inspect`
    needs no data and does not call it."""
    src = source(cfg)
    if src.fetch is not None:
        src.fetch(cfg)
    if cfg.train_size is not None or cfg.val_fraction:
        train, test = (per_class(c) for c in src.counts(cfg))
        split(cfg, train, test, classes)


def per_class(counts: list[int]) -> torch.Tensor:
    """Labels with these counts per class: all a stratified split depends on."""
    return torch.repeat_interleave(
        torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long)
    )


def source(cfg: DataConfig) -> Source:
    name = cfg.source or cfg.name
    if name not in SOURCES:
        raise ConfigError(f"data.name={name!r} is not allowed: choose one of {', '.join(SOURCES)}")
    src = SOURCES[name]
    if not isinstance(cfg, src.schema):
        raise ConfigError(f"data.name={name!r} has keys of its own: choose it with data={name}")
    return src


def load(cfg: DataConfig) -> Dataset:
    """The dataset, cut to data.train_size / test_size, with data.val_fraction of the
    training images held out for validation and data.normalize resolved (auto: from the
    images left to train on)."""
    ds = source(cfg).load(cfg)
    train, held, test = split(cfg, ds.y_train, ds.y_test, ds.classes)
    x_val = y_val = None
    if held is not None:
        x_val, y_val = ds.x_train[held], ds.y_train[held]
    x_train, y_train = ds.x_train[train], ds.y_train[train]
    normalize = channel_stats(x_train) if cfg.normalize == "auto" else list(cfg.normalize)
    x_test, y_test = ds.x_test[test], ds.y_test[test]
    return Dataset(x_train, y_train, x_test, y_test, ds.classes, normalize, x_val, y_val, held)


def split(cfg: DataConfig, y_train: torch.Tensor, y_test: torch.Tensor, classes: list[str]):
    """(training, validation or None, test) indices into the source's sets: the samples of
    data.train_size / test_size, then data.val_fraction of the training sample held out.
    A training split without a class the test set holds is refused, as a UCR test file
    with labels its training file lacks is: nothing could learn that class."""
    train, test = sample(y_train, cfg.train_size), sample(y_test, cfg.test_size)
    held = None
    if cfg.val_fraction:
        kept, held_out = validation_split(y_train[train], cfg.val_fraction, cfg.val_seed)
        index = torch.arange(len(y_train))[train]
        train, held = index[kept], index[held_out]
    missing = sorted(set(y_test[test].tolist()) - set(y_train[train].tolist()))
    if missing:
        keys = [f"data.train_size={cfg.train_size}"] if cfg.train_size is not None else []
        keys += [f"data.val_fraction={cfg.val_fraction}"] if cfg.val_fraction else []
        n = len(y_train[train])
        names = ", ".join(classes[c] for c in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{' with '.join(keys) or 'the data'} leaves the training split ({n:,} "
            f"image{'s' * (n != 1)}) without {len(missing)} of the classes the test set holds "
            f"({names}): nothing learns a class it never sees; use a larger data.train_size "
            f"or a smaller data.val_fraction"
        )
    return train, held, test


# The seed of every sample data.train_size / test_size take: a constant, not the run's seed,
# so runs with different seeds train and test on the same images.
SAMPLE_SEED = 0


def sample(y: torch.Tensor, n: int | None, seed: int = SAMPLE_SEED) -> torch.Tensor | slice:
    """Which n of the labels y to keep: a seeded sample stratified by class (each class keeps
    its share, the remainder going to the largest fractions), in the set's own order; all of
    them (a slice, no copy) when n is None or not smaller. A folder listed class by class, cut
    to its first n, would keep the first classes only."""
    if n is None or n >= len(y):
        return slice(None)
    counts = torch.bincount(y)
    share = counts.double() * n / len(y)
    take = share.floor().long()
    # the images left over go to the classes with the largest fractions (ties: lower class)
    order = sorted(range(len(counts)), key=lambda c: (-(share[c] - take[c]).item(), c))
    for c in order[: n - int(take.sum())]:
        take[c] += 1
    g = torch.Generator().manual_seed(seed)
    kept = []
    for c, k in enumerate(take.tolist()):
        members = (y == c).nonzero().flatten()
        kept.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(kept).sort().values


def validation_split(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices into y: round(fraction * len(y)) images held out,
    stratified by class as sample() draws them, seeded by `seed` alone (data.val_seed), so
    every run with the same data and val_seed validates on the same images."""
    n = round(fraction * len(y))
    if not 0 < n < len(y):
        raise ConfigError(
            f"data.val_fraction={fraction} holds out {n} of the {len(y)} training images: "
            f"choose a share that leaves at least one image on each side"
        )
    held = sample(y, n, seed)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().flatten(), held


# Every dataset name, declared once: the config, bench and the CLI read them from here.
SOURCES: dict[str, Source] = {
    "mnist": Source(idx_spec, load_idx_dataset, idx_counts, fetch=present_files),
    "fashion_mnist": Source(idx_spec, load_idx_dataset, idx_counts, fetch=present_files),
    "cifar10": Source(
        cifar_spec, load_cifar10, fixed(CIFAR10_COUNTS, CIFAR10_TEST_COUNTS), fetch=cifar_files
    ),
    "digits": Source(fixed((1, 28, 28), DIGITS), load_digits, loaded_counts(load_digits)),
    "synthetic": Source(synthetic_spec, synthetic, loaded_counts(synthetic), SyntheticDataConfig),
    "ucr": Source(ucr_spec, load_ucr, ucr_counts, UcrDataConfig),
    "image_folder": Source(
        image_folder_spec, load_image_folder, image_folder_counts, ImageFolderDataConfig
    ),
}
