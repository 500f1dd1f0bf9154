"""Range checks shared by the config schemas (config.py): each raises a ConfigError that names
the key, the value and what is allowed."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass

from cnnlab.outcome import ConfigError


def positive(key: str, value, allow_zero: bool = False) -> None:
    # written so that NaN fails too (every comparison with NaN is false)
    if not (math.isfinite(value) and (value > 0 or (allow_zero and value == 0))):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is not allowed: it must be a finite number {allowed}")


def dropout_rate(key: str, p) -> None:
    if not 0 <= p < 1:
        raise ConfigError(f"{key}={p} is not allowed: use a share 0 <= p < 1 (0: no dropout)")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_or_pair(key: str, value, allow_zero: bool = False):
    """An int, or [h, w] of ints (returned as a tuple), each > 0 (>= 0 with allow_zero)."""
    pair = isinstance(value, list | tuple)
    values = tuple(value) if pair else (value,)
    if (pair and len(values) != 2) or not all(
        is_int(v) and (v > 0 or (allow_zero and v == 0)) for v in values
    ):
        allowed = ">= 0" if allow_zero else ">= 1"
        shown = list(values) if pair else value
        raise ConfigError(f"{key}={shown!r} is not allowed: use an int {allowed} or [h, w] of them")
    return values if pair else value


def thread_count(key: str, value):
    """auto, or a whole number >= 1, given as a number or quoted ('2': the number)."""
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if value != "auto" and not (is_int(value) and value >= 1):
        raise ConfigError(f"{key}={value!r} is not allowed: use auto or a whole number >= 1")
    return value


# More layers than any model here wants; it bounds the time a config's check takes (a
# model is built on the meta device, about 0.5 ms a layer).
MAX_LAYERS = 1000


def layers(key: str, count: int, value) -> None:
    if count > MAX_LAYERS:
        raise ConfigError(f"{key}={value} makes {count} layers: at most {MAX_LAYERS} are allowed")


def refuse_non_finite(node, key: str = "") -> None:
    """Every float of a config (a field, or an item of a list field) must be finite: NaN
    or infinity passes most range checks (every comparison with NaN is false) and then
    breaks a model's size or the training. One walk over the dataclasses, so a new float
    key is covered without a line of its own."""
    if is_dataclass(node):
        for f in fields(node):
            refuse_non_finite(getattr(node, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(node, list | tuple):
        if any(isinstance(v, float) and not math.isfinite(v) for v in node):
            raise ConfigError(f"{key}={list(node)} is not allowed: every number must be finite")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{key}={node} is not allowed: it must be a finite number")
