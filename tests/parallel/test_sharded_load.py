"""load_checkpoint(shardings=...) on 8 simulated CPU devices (run in a subprocess, which sets
the device count before JAX starts)."""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_checkpoint_loads_straight_into_the_mesh(tmp_path):
    out = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name(
        "sharded_load.py")), str(tmp_path / "checkpoint")], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
        timeout=600)
    assert out.returncode == 0 and out.stdout.startswith("OK"), out.stderr[-3000:]
