"""`python -m sallm_jax.commands.parity` on a tiny random Qwen2-Audio checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.commands import parity  # noqa: E402
from tests.models.hf_tiny import save_qwen2_audio  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity_tiny")
    save_qwen2_audio(path)
    return path


def test_exits_zero_on_a_faithful_checkpoint(checkpoint, capsys):
    assert parity.main(["--checkpoint", str(checkpoint)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("max |logit difference| = ") and line.endswith(": OK")
    assert float(line.split("= ")[1].split()[0]) < 1e-4


def test_perturbed_weight_exits_non_zero(checkpoint, monkeypatch, capsys):
    """One weight of the sallm_jax side moved by 0.05 (transformers reads the intact file)."""
    load = parity.load_checkpoint

    def perturbed(*args, **kwargs):
        loaded = load(*args, **kwargs)
        kernel = loaded.model.language_model.layers[1].mlp.down_proj.kernel
        kernel.set_value(kernel.get_value().at[3, 5].add(0.05))
        return loaded

    monkeypatch.setattr(parity, "load_checkpoint", perturbed)
    assert parity.main(["--checkpoint", str(checkpoint), "--tolerance", "1e-4"]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("FAILED")
    # A generous tolerance accepts the same difference.
    assert parity.main(["--checkpoint", str(checkpoint), "--tolerance", "10"]) == 0


def test_clear_message_without_torch(checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert parity.main(["--checkpoint", str(checkpoint)]) == 2
    assert "needs torch and transformers" in capsys.readouterr().err


def test_command_line_reports_a_missing_checkpoint(tmp_path):
    """`python -m sallm_jax.commands.parity` as a user runs it (the cheap path: no model is
    loaded)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-m", "sallm_jax.commands.parity", "--checkpoint",
         str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no config.json" in result.stderr
