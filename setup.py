"""The wheel's packages: every package under sallm_jax/, and the repository's top-level configs/
shipped as `sallm_jax.configs` (so `--config=configs/<name>.py` works in a checkout and from an
installed wheel alike). The project's metadata is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["sallm_jax*"]), "sallm_jax.configs"],
      package_dir={"sallm_jax.configs": "configs"})
