"""Typed settings of the GRPO stage: frozen dataclasses whose fields are keys of the config's
`grpo` section, read from it once (`read_settings`) and checked as they are built (`check`).

An error names the key as the user writes it, `grpo.<field>`, and is a `ConfigError` (one line,
exit status 2 from the commands).
"""

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
    """`cls` (a dataclass) with each field that `section` holds a key of read from it, the
    fields in `given` as given, and the others at their defaults."""
    values = {f.name: section[f.name] for f in dataclasses.fields(cls)
              if f.init and f.name in section}
    return cls(**{**values, **given})
