"""The registry of the stages a config's `stages` can list: each stage's runner, the defaults
of its config section (named after the stage) and the checks of that section."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

Check = Callable[[ml_collections.ConfigDict, str], None]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One entry of `stages`.

    `run` is a training stage's runner (experiment, stage name, starting parameters) -> the
    trained parameters, or for a stage that does not train (`trains` False: the evaluation)
    experiment -> its results. `defaults()` builds the config section `cfg[name]`;
    `check(cfg, name)` raises ConfigError naming the first key of that section that cannot
    work (it may read other sections where they constrain it).
    """

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
