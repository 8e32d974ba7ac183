"""W&B beside TensorBoard (`logging.wandb`; the optional extra `pip install 'sallm_jax[wandb]'`)."""

from __future__ import annotations

import dataclasses
import pathlib

import ml_collections

from sallm_jax.runtime.user_errors import ConfigError

COMPLETION_COLUMNS = ("id", "question", "reference", "reward", "advantage", "completion")


@dataclasses.dataclass(frozen=True)
class WandbSettings:
    """Stage s logs to run `<name>/<s>` of group `name` (job type s) in `project` under `entity`
    ("": the account's default), with the experiment's `config`."""

    project: str
    entity: str
    name: str
    config: dict


def wandb_settings(cfg: ml_collections.ConfigDict,
                   workdir: pathlib.Path) -> WandbSettings | None:
    """`cfg.logging`'s W&B settings (run name: the workdir's by default); None when off."""
    section = cfg.logging
    if not section.wandb:
        return None
    return WandbSettings(project=section.wandb_project, entity=section.wandb_entity,
                         name=section.wandb_run_name or pathlib.Path(workdir).name,
                         config=cfg.to_dict())


def import_wandb():
    """The wandb module; a ConfigError naming `logging.wandb` when it is not installed."""
    try:
        import wandb
    except ImportError as error:
        raise ConfigError("logging.wandb: expected the wandb package installed (pip install "
                          "'sallm_jax[wandb]'), got True without it") from error
    return wandb


def completion_rows(group: dict) -> list[list]:
    """A logged group (`completions_table` record) as `COMPLETION_COLUMNS` rows, one per sample."""
    return [[group["id"], group["question"], group["reference"], sample["reward"],
             sample["advantage"], sample["completion"]] for sample in group["samples"]]


class WandbMirror:
    """One stage's W&B run (files in `<directory>/wandb/`); a resumed stage continues it."""

    def __init__(self, settings: WandbSettings, directory: pathlib.Path, stage: str):
        """ConfigError naming `logging.wandb` if W&B refuses the run (not logged in, a bad key)."""
        self.wandb = import_wandb()
        try:
            self.run = self.wandb.init(project=settings.project, entity=settings.entity or None,
                                       name=f"{settings.name}/{stage}", group=settings.name,
                                       job_type=stage, config=settings.config, dir=directory,
                                       resume="auto")
        except (self.wandb.errors.UsageError, self.wandb.errors.AuthenticationError) as error:
            raise ConfigError(f"logging.wandb: W&B would not start a run ({error}); log in "
                              "(`wandb login` or WANDB_API_KEY), or set WANDB_MODE=offline "
                              "to keep the run on this machine") from error

    def scalars(self, step: int, tagged: dict[str, float]) -> None:
        """Log `tagged` (TensorBoard tag -> value) at `step`."""
        self.run.log(tagged, step=step)

    def completions(self, step: int, tag: str, group: dict) -> None:
        """Log `group` (`completions_table` record) as a table under `tag` at `step`."""
        table = self.wandb.Table(columns=list(COMPLETION_COLUMNS), data=completion_rows(group))
        self.run.log({tag: table}, step=step)

    def close(self) -> None:
        self.run.finish()
