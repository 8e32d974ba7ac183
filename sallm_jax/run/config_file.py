"""The `--config=FILE[:preset]` flag, which finds the shipped configs from any directory.

FILE is tried as given, then in configs/ (installed as `sallm_jax.configs`): `configs/sqa_grpo.py`
or `sqa_grpo` names the shipped file from anywhere.
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

import sallm_jax.configs

# The flags define_config_flag defines belong to its caller (in --help, module_help).
flags.disclaim_key_flags()

CONFIGS_DIR = pathlib.Path(sallm_jax.configs.__file__).resolve().parent


def shipped_configs() -> list[str]:
    """The names of the experiment configs in configs/ (base.py holds no experiment)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if p.stem not in ("__init__", "base"))


def resolve_config_file(spec: str, flag: str = "config") -> str:
    """`spec` ("FILE[:preset]") with FILE made a path that exists; ValueError naming `--flag`."""
    name, colon, preset = spec.partition(":")
    if not name:
        raise ValueError(f"--{flag}: no config file given in {spec!r}")
    candidates = [pathlib.Path(name)]
    if not candidates[0].is_absolute():
        shipped = pathlib.PurePath(name)
        if shipped.parts[0] == "configs":
            candidates.append(CONFIGS_DIR.joinpath(*shipped.parts[1:]))
        elif "/" not in name and not name.endswith(".py"):
            candidates.append(CONFIGS_DIR / f"{name}.py")
    for path in candidates:
        if path.is_file():
            return f"{path}{colon}{preset}"
    raise ValueError(f"--{flag}={spec}: no file {name!r} in {pathlib.Path.cwd()} nor among the "
                     f"shipped configs (configs/<name>.py or <name>, name one of "
                     f"{', '.join(shipped_configs())})")


def config_stem(spec: str) -> str:
    """The config file's bare name: `configs/sqa_grpo.py:smoke` -> `sqa_grpo`."""
    return pathlib.Path(spec.partition(":")[0]).stem


class _ShippedConfigParser(ConfigFileFlagParser):
    def parse(self, path):
        return super().parse(resolve_config_file(path, self.name))


def define_config_flag(name: str, help_string: str, lock_config: bool) -> flags.FlagHolder:
    """An ml_collections config-file flag (`--name=FILE[:preset]`, `--name.key=value`
    overrides) whose FILE is resolved by `resolve_config_file`."""
    holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=lock_config)
    flags.FLAGS[name].parser = _ShippedConfigParser(name, lock_config=lock_config)
    return holder
