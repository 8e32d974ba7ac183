"""`pip install` of the checkout (a built wheel, not editable) into a fresh virtual environment
outside it: from another directory the main job finds the shipped config and runs.

Offline and quick: the wheel is built without build isolation and installed without
dependencies; the new environment sees the dependencies already installed here through a .pth
line naming this environment's site-packages (whose own .pth files, the editable install's
among them, a .pth line does not run), so `sallm_jax` can come only from the wheel.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from sallm_jax.configs.sqa_grpo import get_config

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 1


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args, "--no-deps", "--no-index"],
                   check=True)


def installed_venv(tmp_path):
    """A venv holding only the wheel built from the checkout; its python."""
    src = tmp_path / "src"  # the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for folder in ("sallm_jax", "configs"):  # configs/ ships as sallm_jax.configs (setup.py)
        shutil.copytree(os.path.join(ROOT, folder), src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip("wheel", "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(src))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    (wheel,) = (tmp_path / "wheels").glob("sallm_jax-*.whl")
    pip("--python", python, "install", str(wheel))
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    with open(os.path.join(site.stdout.strip(), "dependencies.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    return python, venv


def test_installed_wheel_runs_the_shipped_config(tmp_path, smoke_cache):
    python, venv = installed_venv(tmp_path)
    elsewhere = tmp_path / "elsewhere"  # no configs/ and no sallm_jax/ here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(JAX_PLATFORMS="cpu", SALLM_JAX_CACHE=str(smoke_cache))

    where = subprocess.run(
        [python, "-c", "import sallm_jax, sallm_jax.run.config_file as c;"
                       " print(sallm_jax.__file__);"
                       " print(c.resolve_config_file('configs/sqa_grpo.py:smoke'))"],
        cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.split()
    site = str(venv / "lib")
    assert where[0].startswith(site) and where[1].startswith(site), where
    assert where[1].endswith("sallm_jax/configs/sqa_grpo.py:smoke")

    workdir = tmp_path / "run"
    run = subprocess.run(
        [python, "-m", "sallm_jax.main", "--config=configs/sqa_grpo.py:smoke",
         "--config.stages=('warmup',)", "--config.warmup.start=init",
         f"--config.warmup.steps={STEPS}", f"--workdir={workdir}"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    # The run's resolved config is the checkout's smoke preset with the three overrides.
    expected = get_config("smoke")
    expected.stages, expected.warmup.start, expected.warmup.steps = ("warmup",), "init", STEPS
    assert json.loads((workdir / "config.json").read_text()) == json.loads(
        expected.to_json_best_effort())
    assert (workdir / "warmup" / "params").is_dir()
    assert [json.loads(line)["step"] for line in
            (workdir / "warmup" / "metrics.jsonl").read_text().splitlines()] == [STEPS]
    assert (workdir / "report.md").exists()
