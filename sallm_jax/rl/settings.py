"""Typed `grpo` settings: frozen dataclasses read once (`read_settings`), checked as built.

A bad value raises ConfigError (one line, exit status 2) naming the key as `grpo.<field>`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from sallm_jax.runtime.user_errors import require

SECTION = "grpo"  # the config section, named after the stage that reads it

T = TypeVar("T")


def check(ok: bool, field: str, expected: str, value: Any) -> None:
    """Raise ConfigError "grpo.`field`: expected `expected`, got `value`" unless `ok`."""
    require(ok, f"{SECTION}.{field}", expected, value)


def finite(value: Any) -> bool:
    """Whether `value` is a finite int or float (a bool is neither)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_settings(cls: type[T], section: Mapping[str, Any], **given: Any) -> T:
    """`cls` with the fields `section` holds read from it, `given` as given, others default."""
    values = {f.name: section[f.name] for f in dataclasses.fields(cls)
              if f.init and f.name in section}
    return cls(**{**values, **given})
