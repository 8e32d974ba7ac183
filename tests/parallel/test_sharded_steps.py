"""On 8 simulated CPU devices, SFT, rollout and GRPO steps under several meshes agree with one
device (float32 tolerance), one of them with the decoder's and encoder's layers scanned (against
the unrolled one-device run), and a mesh that cannot split a parameter says which one."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest
from flax import nnx

from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.parallel.mesh import make_mesh, mesh_shape
from sallm_jax.parallel.sharding import DEFAULT_RULES, logical_to_mesh, mesh_specs, param_shardings

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_meshes_match_one_device():
    # fsdp x tensor; data x fsdp with the layers scanned (data parallel: test_multiprocess)
    meshes = ["1x4x2", "2x4x1+scan"]
    out = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name(
        "sharded_steps.py")), *meshes], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert set(report) == set(meshes)
    for mesh, diffs in report.items():
        assert diffs["tokens_equal"], mesh
        assert diffs["sft_loss"] < 1e-5, (mesh, diffs)
        assert diffs["grpo_loss"] < 1e-5, (mesh, diffs)
        assert diffs["params"] < 1e-5, (mesh, diffs)


def test_mesh_shape_fills_the_rest():
    assert mesh_shape({"data": -1}, 8) == (8, 1, 1)
    assert mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="parallel.mesh"):
        mesh_shape({"data": 3, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="unknown axes"):
        mesh_shape({"model": 2}, 8)


def test_rules_map_logical_names_once_per_mesh_axis():
    spec = jax.sharding.PartitionSpec("audio_embed", "embed")
    assert logical_to_mesh(spec, DEFAULT_RULES) == jax.sharding.PartitionSpec("fsdp", None)
    spec = jax.sharding.PartitionSpec("embed", "mlp")
    assert logical_to_mesh(spec, DEFAULT_RULES) == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_indivisible_parameter_is_named():
    config = Qwen2AudioConfig(
        audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                                 encoder_attention_heads=2, encoder_ffn_dim=64,
                                 max_source_positions=100),
        text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=36,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
        audio_token_id=3)
    params = nnx.state(nnx.eval_shape(lambda: Qwen2AudioLM(config, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match=r"language_model/layers/0/mlp/\w+_proj/kernel: "
                                         r"dimension \d \('mlp', size 36\)"):
        mesh_specs(params, {"data": 1, "fsdp": 1, "tensor": 8}, DEFAULT_RULES)
    specs = nnx.to_pure_dict(mesh_specs(params, {"data": 1, "fsdp": 2, "tensor": 4}, DEFAULT_RULES))
    kernel = specs["language_model"]["layers"][0]["self_attn"]["q_proj"]["kernel"]
    assert kernel == jax.sharding.PartitionSpec("fsdp", "tensor")
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    assert param_shardings(params, mesh, DEFAULT_RULES) is not None
