"""Checking a composed config once, before anything is written: the keys, ranges, the data
source's shape, the model on the meta device, the device and what fits on it, and the
checkpoint to resume. The result (`Checked`) travels with the job, so the run checks and
reads nothing of this again."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from cnnlab.config import RESUMABLE_CHANGES, TrainConfig, flatten, is_run_setting
from cnnlab.outcome import ConfigError, RunError

# torch is imported by the checks that need it, after the keys and ranges: a typo is
# refused without it (issue 30)
if TYPE_CHECKING:
    from torch import nn


@dataclasses.dataclass
class Checked:
    """A job's config as check_config passed it, with what the check had to read anyway."""

    config: TrainConfig
    input_shape: tuple
    classes: list
    model: nn.Module  # on the meta device: shapes, no weights (what inspect shows)
    checkpoint: dict | None = None  # resume=: loaded once, here; the run starts from it


def schema_keys(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """Hydra lets `+model.foo=1` add a key to a schema; nothing would read it, so say so."""
    for group in ("model", "data", "trainer", "logger"):
        if not isinstance(cfg[group], DictConfig):  # ~model
            raise ConfigError(f"{group} is not set (~{group}?): a run needs one, {group}=NAME")
        allowed = schema_keys(OmegaConf.get_type(cfg[group]))
        extra = [key for key in cfg[group] if key not in allowed]
        if extra:
            raise ConfigError(
                f"{group}.{extra[0]} is not a key of this {group} config: allowed are "
                f"{', '.join(allowed)}"
            )


def resume_config(cfg: TrainConfig) -> dict:
    """What a checkpoint must agree on to be resumed: all but the run settings and what a
    resume may change."""
    tree = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    return {
        key: value
        for key, value in flatten(tree).items()
        if not is_run_setting(key) and key not in RESUMABLE_CHANGES
    }


def check_resumable(saved: dict, current: dict, path: str) -> None:
    diff = [
        f"{k}={saved.get(k)!r} (now {current.get(k)!r})"
        for k in sorted(saved | current)
        if saved.get(k) != current.get(k)
    ]
    if diff:
        raise ConfigError(
            f"resume={path} was trained with a different config: {', '.join(diff)}; pass the "
            f"same overrides as the original run (only {', '.join(RESUMABLE_CHANGES)} and the "
            f"run settings may change)"
        )


def check_config(cfg: DictConfig, run: bool = True) -> Checked:
    """The config as dataclasses, with every check that needs no data: ranges, the data
    source's shape, the model built on the meta device (no memory, no time), the device,
    and the checkpoint to resume; for a run (not inspect), the data at hand and its split
    (data.check). Raises a RunError with status bad_input (failed: data not to be had)."""
    refuse_unknown_keys(cfg)
    plain = OmegaConf.to_object(cfg)  # the ranges: a refusal so far needed no torch
    from cnnlab import data
    from cnnlab.devices import resolve_device
    from cnnlab.engine import choose_path

    input_shape, classes = data.spec(plain.data)
    model = meta_model(plain.model, input_shape, len(classes))
    device = resolve_device(plain.device)
    choose_path(plain.trainer, device)
    check_fits(plain, model, input_shape, len(classes), device)
    checked = Checked(plain, input_shape, classes, model)
    if plain.resume:
        checked.checkpoint = check_resume(plain, model)
    if run:  # last: a config refused for anything else downloads nothing
        data.check(plain.data, classes)
    return checked


def check_resume(cfg: TrainConfig, model: nn.Module) -> dict:
    """The checkpoint resume= names, loaded (model and optimiser) and checked against the
    config and the model."""
    from cnnlab.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(cfg.resume)
    check_resumable(checkpoint.get("config", {}), resume_config(cfg), cfg.resume)
    check_checkpoint_tensors(checkpoint, model, cfg.seeds, cfg.resume)
    if checkpoint["epoch"] >= cfg.trainer.epochs:  # nothing would train
        raise ConfigError(
            f"resume={cfg.resume}: the run already has {checkpoint['epoch']} epochs and "
            f"trainer.epochs={cfg.trainer.epochs} asks for no more: pass "
            f"trainer.epochs={checkpoint['epoch'] + 1} or more to train on"
        )
    return checkpoint


def meta_model(cfg, input_shape: tuple, classes: int) -> nn.Module:
    """The model on the meta device: shapes only. A size torch cannot even compute (a
    width of 1e9) is bad input, not a crash."""
    import torch

    from cnnlab.models import build_model

    try:
        with torch.device("meta"):
            return build_model(cfg, input_shape, classes)
    except RunError:
        raise
    except (RuntimeError, ValueError, OverflowError) as e:
        shape = "x".join(map(str, input_shape))
        raise ConfigError(
            f"model={cfg.name} with model.width={cfg.width} on input {shape} is too large to "
            f"build ({first_line(e)}): use a smaller model.width or fewer, smaller layers"
        ) from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_fits(cfg: TrainConfig, model: nn.Module, input_shape: tuple, classes: int, device):
    """Refuse a run that would not fit in the device's memory, before training: a stack of
    seeds by its estimated peak; one model by its weights, their gradients and one
    optimiser buffer (float32) alone, a lower bound, so no run that fits is refused."""
    from cnnlab import data
    from cnnlab.models import count_params
    from cnnlab.stack import estimate_bytes

    free = data.free_memory(device)
    if free is None:
        return
    if cfg.seeds > 1:
        need = estimate_bytes(cfg.model, input_shape, classes, cfg.seeds, cfg.trainer)
        what, remedy = f"seeds={cfg.seeds}", "use fewer seeds or a smaller trainer.batch_size"
    else:
        need = 3 * 4 * count_params(model)
        what = f"model={cfg.model.name} ({count_params(model):,} parameters)"
        remedy = "use a smaller model.width or fewer, smaller layers"
    if need > free:
        raise ConfigError(
            f"{what} needs about {need / 2**30:.1f} GiB on {device}, which has "
            f"{free / 2**30:.1f} GiB free: {remedy}"
        )


def check_checkpoint_tensors(checkpoint: dict, model: nn.Module, seeds: int, path) -> None:
    """A checkpoint whose config matches but whose tensors do not fit the model (an edited
    or foreign file) is refused here, by name and shape, not halfway into loading it. Seeds
    trained together keep each tensor with a leading copy dimension (stack.stack_models)."""
    import torch

    copies = (seeds,) if seeds > 1 else ()
    expected = {k: (*copies, *v.shape) for k, v in model.state_dict().items()}
    saved = checkpoint["model"]
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        raise ConfigError(f"resume={path}: its model entry is not a dict of tensors")
    found = {k: tuple(v.shape) for k, v in saved.items()}
    wrong = [f"{k} missing" for k in expected if k not in found]
    wrong += [f"{k} unexpected" for k in found if k not in expected]
    wrong += [
        f"{k} of shape {list(found[k])} (the model's: {list(expected[k])})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    if wrong:
        raise ConfigError(
            f"resume={path}: the checkpoint's tensors do not fit the model: "
            f"{', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''}"
        )
