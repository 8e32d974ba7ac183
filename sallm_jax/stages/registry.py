"""The registry of stages: each one's runner, config-section defaults and section checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

Check = Callable[[ml_collections.ConfigDict, str], None]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One entry of `stages`: `run` (experiment, name, start parameters) -> trained parameters,
    or for a stage that does not train (`trains` False) experiment -> results; `defaults()`
    builds `cfg[name]`; `check(cfg, name)` raises ConfigError naming the first key of it that
    cannot work."""

    name: str
    run: Callable
    defaults: Callable[[], ml_collections.ConfigDict]
    check: Check
    trains: bool = True

    @property
    def section(self) -> str | None:
        """The section a training stage trains by (its own name); None for the evaluation."""
        return self.name if self.trains else None


STAGES: dict[str, Stage] = {}


def register_stage(name: str, run: Callable, *,
                   defaults: Callable[[], ml_collections.ConfigDict], check: Check,
                   trains: bool = True) -> None:
    """Make `name` a stage `stages` may list, with its runner, section defaults and checks."""
    STAGES[name] = Stage(name, run, defaults, check, trains)


def training_stages() -> tuple[str, ...]:
    """The registered stages that train, in registration order."""
    return tuple(name for name, stage in STAGES.items() if stage.trains)


def stage_sections() -> dict[str, ml_collections.ConfigDict]:
    """Each registered stage's section with its defaults, by stage name."""
    return {name: stage.defaults() for name, stage in STAGES.items()}
