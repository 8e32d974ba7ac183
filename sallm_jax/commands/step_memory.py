"""Per-device memory of a GRPO step from shapes alone (nothing is allocated), in bytes per device;
`python -m sallm_jax.commands.plan_memory` prints it as a table. Rows:
  parameters   each parameter's shard under the logical-axis rules (`mesh_specs`), plan's dtype
  gradients    one per trainable parameter, sharded and typed like it, all live at once
  optimiser    AdamW: two float32 moments per trainable parameter, sharded like it
  reference    a copy of the parameters; none under LoRA (base, adapters off) or with beta 0
  kv cache     the rollout cache (`kv_cache_bytes`)
  activations  what the update's backward keeps (`activation_bytes_per_token`) plus one layer's
               gradients; remat "full": each layer's input, one layer's set and its gradients
  logits       float32 completion logits [B x G, completion, vocab], gradient and log-softmax
On the CPU (`PlanInputs.backend = "cpu"`) two more:
  float32 layer copies  one decoder layer in float32 in each of the forward and backward loops
               (XLA's CPU backend computes bfloat16 matmuls in float32)
  process      the interpreter and libraries before any array (`CPU_PROCESS_BYTES`: 0.43 GB)
Not counted: the audio encoder's activations, the no-gradient reference and old-policy passes, XLA
scratch and fragmentation. tests/test_plan_memory.py: activations + logits within 25% of XLA."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from sallm_jax.models.abstract import abstract_model
from sallm_jax.models.granite_speech.config import GraniteTextConfig
from sallm_jax.models.lora import LoRAParam
from sallm_jax.models.presets import ModelConfig
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.parallel.sharding import BATCH_AXES, DEFAULT_RULES, Rules, mesh_specs

OPTIMIZER_MOMENTS = 2  # AdamW: first and second moment
OPTIMIZER_BYTES = 4  # the moments are float32 whatever the parameter dtype
CPU_PROCESS_BYTES = 430 * 2**20  # resident before the checkpoint loads (module docstring)
BACKENDS = ("accelerator", "cpu")


def abstract_params(config: ModelConfig, *, dtype=jnp.bfloat16, lora_rank: int = 0) -> nnx.State:
    """Every nnx.Param, LoRA factors included, as `dtype` ShapeDtypeStructs (`abstract_model`)."""
    model = abstract_model(config, dtype=dtype, lora_rank=lora_rank)
    return nnx.state(model, nnx.Param)


def decoder_layer_params(params: nnx.State) -> int:
    """Parameters of one decoder layer (the first; they are alike), adapters included."""
    flat = nnx.to_flat_state(params["language_model"]["layers"])
    return sum(math.prod(v.shape) for path, v in flat if path[0] == 0)


def _shard_factor(spec: PartitionSpec, axis_sizes: Mapping[str, int]) -> int:
    """How many ways a PartitionSpec splits its array (1 for a replicated one)."""
    factor = 1
    for axes in spec:
        for name in (() if axes is None else (axes,) if isinstance(axes, str) else axes):
            factor *= axis_sizes[name]
    return factor


def sharded_bytes(params: nnx.State, axis_sizes: Mapping[str, int], rules: Rules) -> int:
    """Per-device bytes of `params` under `rules` on `axis_sizes`; ValueError if a split fails."""
    specs = mesh_specs(params, axis_sizes, rules)
    leaves = jax.tree.leaves(params)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
               // _shard_factor(spec, axis_sizes)
               for leaf, spec in zip(leaves, spec_leaves, strict=True))


def _split(size: int, ways: int) -> int:
    """Ways a dimension of `size` actually splits: `ways` when it divides, else 1 (replicated)."""
    return ways if ways > 1 and size % ways == 0 else 1


def kv_cache_bytes(text: TextConfig | GraniteTextConfig, *, batch_size: int, group_size: int,
                   prompt_len: int, completion_len: int, dtype_bytes: int,
                   axis_sizes: Mapping[str, int]) -> int:
    """Per-device bytes of the rollout KV cache: keys and values of the prompts [layers, B,
    prompt_len, kv_heads, head_dim] (shared per group) and the samples [layers, B x G,
    completion_len, kv_heads, head_dim]; rows split over data x fsdp, KV heads over tensor, each
    only when it divides."""
    per_slot = text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2 * dtype_bytes
    data_parallel = math.prod(axis_sizes[a] for a in BATCH_AXES)
    head_split = _split(text.num_key_value_heads, axis_sizes["tensor"])
    rows = batch_size * group_size
    prompts = batch_size * prompt_len * per_slot // _split(batch_size, data_parallel)
    samples = rows * completion_len * per_slot // _split(rows, data_parallel)
    return (prompts + samples) // head_split


def activation_bytes_per_token(text: TextConfig | GraniteTextConfig, *, num_keys: int,
                               dtype_bytes: int, tensor: int) -> int:
    """Bytes one decoder layer keeps for the backward pass, per token, without remat.

    In the compute dtype unless noted; head and MLP parts split over `tensor` where it divides them:
      residual: layer input, residual after attention, two RMSNorm outputs (4 x hidden; unsplit);
      attention: q, k, v, RoPE'd q, k (2 x (hidden + kv_heads x head_dim) + kv_heads x head_dim),
        the output before o_proj (hidden), softmax weights over num_keys keys (heads x num_keys,
        float32 and cast: `dot_product_attention` materialises the scores);
      MLP: gate, up, SiLU(gate) and their product (4 x intermediate).
    """
    hidden, kv = text.hidden_size, text.num_key_value_heads * text.head_dim
    heads_split = _split(text.num_attention_heads, tensor)
    kv_split = _split(text.num_key_value_heads, tensor)
    mlp_split = _split(text.intermediate_size, tensor)
    residual = 4 * hidden * dtype_bytes
    projections = (2 * hidden // heads_split + 3 * kv // kv_split) * dtype_bytes
    attention_out = hidden // heads_split * dtype_bytes
    scores = text.num_attention_heads // heads_split * num_keys * (4 + dtype_bytes)
    mlp = 4 * text.intermediate_size // mlp_split * dtype_bytes
    return residual + projections + attention_out + scores + mlp


@dataclasses.dataclass(frozen=True)
class PlanInputs:
    """What a GRPO step's memory depends on, besides the model."""

    batch_size: int = 16  # prompts per step (B)
    group_size: int = 8  # samples per prompt (G)
    prompt_len: int = 512  # tokens, audio placeholders included
    completion_len: int = 256
    dtype: str = "bfloat16"  # parameters, KV cache and activations
    lora_rank: int = 0
    remat: str = "none"  # or "full" (model.remat)
    micro_batch_size: int = 0  # prompts per gradient-accumulation micro-batch; 0: all B
    beta: float = 0.04  # 0: no KL term, so no reference policy
    backend: str = "accelerator"  # or "cpu": adds the CPU backend's rows (module docstring)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of each part of a GRPO step, and the facts behind them."""

    rows: dict[str, int]
    num_params: int
    num_trainable: int
    notes: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def plan_memory(config: ModelConfig, axis_sizes: Mapping[str, int], inputs: PlanInputs,
                rules: Rules = DEFAULT_RULES) -> MemoryPlan:
    """Per-device memory of GRPO training `config` on a mesh of `axis_sizes` (AXES order)."""
    if inputs.remat not in ("none", "full"):
        raise ValueError(f"--remat: expected 'none' or 'full', got {inputs.remat!r}")
    if inputs.backend not in BACKENDS:
        raise ValueError(f"--backend: expected one of {BACKENDS}, got {inputs.backend!r}")
    dtype = jnp.dtype(inputs.dtype)
    dtype_bytes = dtype.itemsize
    params = abstract_params(config, dtype=dtype, lora_rank=inputs.lora_rank)
    trainable = nnx.filter_state(params, LoRAParam) if inputs.lora_rank else params
    param_bytes = sharded_bytes(params, axis_sizes, rules)
    trainable_bytes = sharded_bytes(trainable, axis_sizes, rules)
    # Moments have the trainable parameters' shapes and shardings but float32 elements.
    moment_bytes = trainable_bytes * OPTIMIZER_BYTES // dtype_bytes * OPTIMIZER_MOMENTS
    with_reference = inputs.beta != 0 and not inputs.lora_rank

    text = config.text
    prompt_len, completion_len = inputs.prompt_len, inputs.completion_len
    rows = inputs.batch_size * inputs.group_size
    data_parallel = math.prod(axis_sizes[a] for a in BATCH_AXES)
    tensor = axis_sizes["tensor"]
    local_rows = -(-rows // data_parallel)  # ceil: an uneven split leaves some devices more rows
    # The update holds activations and logits of one micro-batch at a time (grpo.micro_batch_size).
    micro = inputs.micro_batch_size or inputs.batch_size
    step_prompts = -(-micro // data_parallel)
    step_rows = -(-micro * inputs.group_size // data_parallel)
    prompt_tokens, completion_tokens = step_prompts * prompt_len, step_rows * completion_len

    def per_token(keys: int) -> int:
        return activation_bytes_per_token(text, num_keys=keys, dtype_bytes=dtype_bytes,
                                          tensor=tensor)

    # One layer's saved set: prompt tokens attend to the prompt, completion tokens to the
    # prompt and their completion.
    layer_set = (prompt_tokens * per_token(prompt_len)
                 + completion_tokens * per_token(prompt_len + completion_len))
    # The backward pass of a layer holds the gradients of that layer's intermediates next to the
    # saved ones: one more layer's worth at the peak.
    if inputs.remat == "full":
        # Only each layer's input survives the forward; the backward recomputes one layer at a
        # time, so one layer's set (and its gradients) is live on top.
        activations = ((prompt_tokens + completion_tokens) * text.num_hidden_layers
                       * text.hidden_size * dtype_bytes + 2 * layer_set)
    else:
        activations = (text.num_hidden_layers + 1) * layer_set
    vocab = text.vocab_size // _split(text.vocab_size, tensor)
    # Completion-position logits, their gradient and their log-softmax, all float32.
    logits = 3 * step_rows * completion_len * vocab * 4

    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    n_trainable = sum(math.prod(x.shape) for x in jax.tree.leaves(trainable))
    notes = [
        f"mesh {dict(axis_sizes)}: {local_rows} of {rows} sequences (B x G) per device, "
        f"{step_rows} at a time (micro-batches of {micro} prompts)",
        f"KV heads {text.num_key_value_heads} "
        + ("split" if _split(text.num_key_value_heads, tensor) > 1 else "replicated")
        + f" over tensor={tensor}",
    ]
    if rows % data_parallel:
        notes.append(f"B x G = {rows} does not divide over data x fsdp = {data_parallel}")
    table = {
        "parameters": param_bytes,
        "gradients": trainable_bytes,
        "optimiser (AdamW, f32)": moment_bytes,
        "reference policy": param_bytes if with_reference else 0,
        "kv cache (rollout)": kv_cache_bytes(
            text, batch_size=inputs.batch_size, group_size=inputs.group_size,
            prompt_len=prompt_len, completion_len=completion_len, dtype_bytes=dtype_bytes,
            axis_sizes=axis_sizes),
        f"activations (remat {inputs.remat})": activations,
        "logits (f32)": logits,
    }
    if inputs.backend == "cpu":
        table["float32 layer copies (CPU)"] = (
            2 * decoder_layer_params(params) * 4 if dtype_bytes < 4 else 0)
        table["process (CPU)"] = CPU_PROCESS_BYTES
    return MemoryPlan(rows=table, num_params=n_params, num_trainable=n_trainable,
                      notes=tuple(notes))
