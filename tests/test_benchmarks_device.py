"""benchmarks/device.sh --smoke on CPU, and the analytic counts its ceilings rest on."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import jax
import pytest
from flax import nnx

from benchmarks.device import decoder_matmul_params, smoke_config
from sallm_jax.models.abstract import abstract_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_decoder_matmul_params_count_the_models_own_kernels():
    config = smoke_config()  # granite_speech_2b's structure; building the real one takes 25 s
    lm = abstract_model(config).language_model
    layer = nnx.state(lm.layers[0], nnx.Param)
    kernels = [x for path, x in jax.tree.leaves_with_path(layer)
               if jax.tree_util.keystr(path).endswith("['kernel'].value")]
    assert len(kernels) == 7  # q, k, v, o, gate, up, down
    table = lm.embed_tokens.embedding  # the tied head reads the embedding table
    assert decoder_matmul_params(config) == (sum(math.prod(k.shape) for k in kernels),
                                             math.prod(table.shape))


@pytest.mark.slow
def test_device_script_smoke_writes_every_row(tmp_path):
    out = tmp_path / "DEVICE.md"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PATH": f"{pathlib.Path(sys.executable).parent}"
                                                          f":{os.environ['PATH']}"}
    subprocess.run(["bash", "benchmarks/device.sh", "--smoke", "--no_peer", "--out", str(out)],
                   cwd=ROOT, env=env, check=True, timeout=600)
    rows = [line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| case", "|---"))]
    cases = [r[0].lstrip("| ") for r in rows]
    assert [c.split(",")[0] for c in cases] == ["rollout", "update", "GRPO step",
                                                "fused vs einsum attention",
                                                "log-prob forward pass"]
    measured = {c.split(",")[0]: float(r[2].split()[0]) for c, r in zip(cases, rows, strict=True)}
    assert all(measured[c] > 0 for c in ("GRPO step", "rollout", "update",
                                         "log-prob forward pass"))
    # On CPU the fused path is JAX's XLA attention: equal to the einsum path to rounding.
    assert measured["fused vs einsum attention"] <= 1e-5
