"""The memory planner against hand-counted bytes (python -m sallm_jax.commands.plan_memory)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from sallm_jax.commands import plan_memory as pm
from sallm_jax.commands import step_memory as sm
from sallm_jax.models.abstract import count_params
from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.parallel.sharding import DEFAULT_RULES
from sallm_jax.rl.policy import completion_logprobs

UNSHARDED = {"data": 1, "fsdp": 1, "tensor": 1}
FSDP8 = {"data": 1, "fsdp": 8, "tensor": 1}

# Elements of the tiny preset that no rule shards (biases and norm scales carry no axis names),
# counted from the architecture (d_model = hidden = 128, 2 audio + 2 text layers, 2 KV heads of
# 32): audio conv biases 2 x 128 + final LayerNorm 2 x 128; per audio layer fc1/fc2 biases
# 256 + 128, q/v/out biases 3 x 128, two LayerNorms 4 x 128; per text layer two RMSNorms
# 2 x 128 and q/k/v biases 128 + 64 + 64; text final norm 128; projector bias 128.
TINY_REPLICATED = 512 + 2 * 1280 + 2 * 512 + 128 + 128


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_unsharded_parameter_bytes_are_count_params_times_dtype_bytes(dtype):
    config = pm.tiny()
    params = sm.abstract_params(config, dtype=jnp.dtype(dtype))
    expected = count_params(config) * jnp.dtype(dtype).itemsize
    assert sm.sharded_bytes(params, UNSHARDED, DEFAULT_RULES) == expected


def test_fsdp8_splits_every_named_parameter_eight_ways():
    config = pm.tiny()
    params = sm.abstract_params(config, dtype=jnp.float32)
    total = count_params(config) * 4
    replicated = TINY_REPLICATED * 4
    sharded = total - replicated
    assert sharded % 8 == 0
    assert sm.sharded_bytes(params, FSDP8, DEFAULT_RULES) == sharded // 8 + replicated


def test_kv_cache_bytes_by_hand():
    text = TextConfig(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    kw = dict(batch_size=4, group_size=8, prompt_len=60, completion_len=40, dtype_bytes=2)
    # Per slot: 2 layers x 2 kv heads x 32 dims x (k, v) x 2 bytes = 512. Prompts: 4 rows x 60
    # slots; samples: 32 rows x 40 slots.
    assert sm.kv_cache_bytes(text, axis_sizes=UNSHARDED, **kw) == (240 + 1280) * 512
    assert sm.kv_cache_bytes(text, axis_sizes={"data": 2, "fsdp": 2, "tensor": 1},
                             **kw) == (240 + 1280) * 512 // 4
    # 8 data-parallel ways split the 32 sample rows but not the 4 prompts (replicated).
    assert sm.kv_cache_bytes(text, axis_sizes={"data": 1, "fsdp": 8, "tensor": 1},
                             **kw) == (240 + 1280 // 8) * 512
    assert sm.kv_cache_bytes(text, axis_sizes={"data": 1, "fsdp": 4, "tensor": 2},
                             **kw) == (240 + 1280) * 512 // 8
    # 2 KV heads do not split 4 ways: they stay replicated over tensor.
    assert sm.kv_cache_bytes(text, axis_sizes={"data": 1, "fsdp": 1, "tensor": 4},
                             **kw) == (240 + 1280) * 512


def test_activation_bytes_per_token_by_hand():
    text = pm.tiny().text  # hidden 128, 4 heads, 2 KV heads of 32, intermediate 384
    # residual 4 x 128 x 2; q, k, v and RoPE'd q, k (2 x 128 + 3 x 64) x 2; attention output
    # 128 x 2; scores 4 heads x 10 keys x (4 + 2); MLP 4 x 384 x 2.
    expected = 1024 + 896 + 256 + 240 + 3072
    assert sm.activation_bytes_per_token(text, num_keys=10, dtype_bytes=2, tensor=1) == expected


def test_lora_trains_only_adapters_and_needs_no_reference_copy():
    inputs = sm.PlanInputs(batch_size=2, group_size=2, prompt_len=8, completion_len=4,
                           dtype="float32", lora_rank=4, beta=0.04)
    plan = sm.plan_memory(pm.tiny(), UNSHARDED, inputs)
    # Per text layer: q_proj adapters 128 x 4 + 4 x 128, v_proj 128 x 4 + 4 x 64; 2 layers.
    adapters = 2 * (1024 + 768)
    assert plan.num_trainable == adapters
    assert plan.rows["gradients"] == adapters * 4
    assert plan.rows["optimiser (AdamW, f32)"] == 2 * adapters * 4
    assert plan.rows["reference policy"] == 0
    assert plan.rows["parameters"] == (count_params(pm.tiny()) + adapters) * 4


def test_full_finetuning_keeps_a_reference_copy_unless_beta_is_zero():
    inputs = sm.PlanInputs(batch_size=2, group_size=2, prompt_len=8, completion_len=4)
    plan = sm.plan_memory(pm.tiny(), UNSHARDED, inputs)
    assert plan.rows["reference policy"] == plan.rows["parameters"] == plan.rows["gradients"]
    # bf16 parameters, float32 moments: each moment is twice the parameter bytes.
    assert plan.rows["optimiser (AdamW, f32)"] == 4 * plan.rows["parameters"]
    no_kl = sm.plan_memory(pm.tiny(), UNSHARDED, sm.PlanInputs(
        batch_size=2, group_size=2, prompt_len=8, completion_len=4, beta=0.0))
    assert no_kl.rows["reference policy"] == 0


def test_indivisible_mesh_gives_the_sharding_error():
    params = sm.abstract_params(pm.tiny())
    with pytest.raises(ValueError, match=r"does not divide over mesh axis fsdp of size 3"):
        sm.sharded_bytes(params, {"data": 1, "fsdp": 3, "tensor": 1}, DEFAULT_RULES)


def test_parse_mesh():
    assert pm.parse_mesh("fsdp=8") == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="unknown axes"):
        pm.parse_mesh("data=1,model=8")
    with pytest.raises(ValueError, match="no -1"):
        pm.parse_mesh("data=-1")


def test_command_qwen2_audio_7b_on_eight_devices(capsys):
    text = pm.main(["--preset", "qwen2_audio_7b", "--mesh", "data=1,fsdp=8,tensor=1",
                    "--device", "v5e"])
    assert capsys.readouterr().out.strip() == text.strip()
    # 8.397 B parameters (Qwen2-Audio-7B-Instruct) in bf16 over 8 devices: 1.96 GiB each.
    assert "8.397 B parameters" in text
    assert "parameters                     1.96 GiB" in text
    assert "DOES NOT FIT" in text.splitlines()[-1]


def test_rules_come_from_a_config_file():
    assert pm.load_rules("configs/sqa_grpo.py:smoke") == DEFAULT_RULES


@pytest.mark.parametrize("group", [1, 4])
def test_activation_and_logit_rows_track_xla_temp_memory(group):
    """XLA's buffer assignment for the gradient of the completion log-probs (the update's
    forward and backward) is an independent measure of its working set; the estimate should
    land near it."""
    config = Qwen2AudioConfig(
        audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                                 encoder_attention_heads=2, encoder_ffn_dim=64,
                                 max_source_positions=50),
        text=TextConfig(vocab_size=1024, hidden_size=128, intermediate_size=384,
                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        tie_word_embeddings=True), audio_token_id=5)
    prompts, prompt, completion = 8 // group, 96, 32
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen2AudioLM(config, rngs=nnx.Rngs(0))))

    def neg_logp(params, prompt_ids, ids):
        model = nnx.merge(graphdef, params)
        batch = {"prompt_ids": prompt_ids, "prompt_mask": jnp.ones_like(prompt_ids)}
        return -completion_logprobs(model, batch, ids, jnp.ones_like(ids),
                                    group_size=group).sum()

    prompt_ids = jax.ShapeDtypeStruct((prompts, prompt), jnp.int32)
    ids = jax.ShapeDtypeStruct((prompts * group, completion), jnp.int32)
    xla = jax.jit(jax.grad(neg_logp)).lower(params, prompt_ids, ids).compile().memory_analysis()
    plan = sm.plan_memory(config, UNSHARDED, sm.PlanInputs(
        batch_size=prompts, group_size=group, prompt_len=prompt, completion_len=completion,
        dtype="float32"))
    activations = next(v for k, v in plan.rows.items() if k.startswith("activations"))
    estimate = activations + plan.rows["logits (f32)"]
    ratio = estimate / xla.temp_size_in_bytes
    assert 0.8 < ratio < 1.25, ratio


def test_the_cpu_backend_adds_two_float32_decoder_layers_and_the_process():
    """With backend "cpu" a bfloat16 plan gains one decoder layer in float32 for each of the
    forward and backward loops (the layer's parameters counted from a layer built alone) and
    the process's fixed bytes; in float32 there is nothing to convert."""
    config = pm.tiny()
    layer = nnx.eval_shape(lambda: Qwen2AudioLM(config, rngs=nnx.Rngs(0)).language_model.layers[0])
    layer_params = sum(x.size for x in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    inputs = sm.PlanInputs(batch_size=2, group_size=2, prompt_len=8, completion_len=4)
    accelerator = sm.plan_memory(config, UNSHARDED, inputs)
    cpu = sm.plan_memory(config, UNSHARDED, dataclasses.replace(inputs, backend="cpu"))
    assert cpu.total - accelerator.total == 2 * layer_params * 4 + sm.CPU_PROCESS_BYTES
    assert cpu.rows["float32 layer copies (CPU)"] == 2 * layer_params * 4
    f32 = dataclasses.replace(inputs, backend="cpu", dtype="float32")
    assert sm.plan_memory(config, UNSHARDED, f32).rows["float32 layer copies (CPU)"] == 0
    with pytest.raises(ValueError, match="--backend"):
        sm.plan_memory(config, UNSHARDED, dataclasses.replace(inputs, backend="tpu"))


def test_command_on_the_cpu_prints_the_cpu_rows(capsys):
    text = pm.main(["--preset", "tiny", "--device", "cpu"])
    assert "float32 layer copies (CPU)" in text and "process (CPU)" in text
