"""Per-device memory of a GRPO step, from shapes alone (nothing is allocated); `python -m
sallm_jax.commands.plan_memory` prints it as a table.

Rows of the table, all in bytes per device:
  parameters      every parameter's shard under the logical-axis rules (`mesh_specs`), in the
                  plan's dtype; a dimension whose rule maps it to no mesh axis is replicated.
  gradients       one gradient per trainable parameter, sharded and typed like it (the update
                  holds all of them at once before the optimiser step).
  optimiser       AdamW: two float32 moments per trainable parameter, sharded like it.
  reference       the GRPO reference policy: a second copy of the parameters, except with LoRA
                  (the base weights with adapters off) or beta 0 (no KL term, no reference).
  kv cache        the rollout cache: one copy of each prompt's keys and values that its group
                  shares (layers x B x prompt) and each sample's own (layers x B x G x
                  completion), x kv_heads x head_dim x 2 (keys, values) in the plan's dtype;
                  rows split over data x fsdp, kv heads over tensor, each only when it divides.
  activations     what the decoder keeps for the backward pass of the update, which runs each
                  of the B prompts once and the B x G completions against them (see
                  `activation_bytes_per_token`; a prompt token's attention sees the prompt, a
                  completion token's the prompt and its completion), plus one layer's worth of
                  their gradients while that layer's backward runs; with remat "full" only each
                  layer's input, plus one layer's recomputed set and its gradients.
  logits          the float32 logits of the completion positions [B x G, completion, vocab]
                  (`completion_logprobs` projects no other prompt position onto the
                  vocabulary), their gradient, and the float32 log-softmax its backward keeps.

On the CPU (`PlanInputs.backend = "cpu"`, where the device's memory is the process's) two
more rows:
  float32 layer copies  XLA's CPU backend computes a bfloat16 (or float16) matmul in float32:
                  the scanned decoder converts one layer's weights at a time inside its loops
                  (`layer_scan.compiler_options`), so the forward loop and the backward loop
                  each hold one decoder layer in float32.
  process         the Python interpreter, JAX, XLA and the libraries before any array
                  (`CPU_PROCESS_BYTES`, measured: 0.43 GB resident on this project's
                  2-core CPU machine before the checkpoint loads).

Check against XLA's own figure (`compiled.memory_analysis().temp_size_in_bytes`) for the
gradient of `completion_logprobs`, on CPU in float32: tests/test_plan_memory.py keeps the
activations + logits rows of a small case within 25% of it.

Not counted: the audio encoder's activations (it runs once per clip, B clips rather than B x G
sequences), the reference and old-policy forward passes (no gradient, so only transient
buffers), XLA's scratch space and fragmentation, and the framework's own reservation.
"""

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
    """Every nnx.Param of the model (LoRA factors included) as ShapeDtypeStructs in `dtype`.

    LoRA adapters go where `abstract_model` puts them (the language model's q_proj and v_proj);
    their alpha scales the update, not the shapes.
    """
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
    """Bytes one device holds of `params` under `rules` on a mesh of `axis_sizes`.

    Raises the sharding module's ValueError (naming the parameter, dimension and rule) when a
    sharded dimension does not divide over its mesh axes.
    """
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
    """Per-device bytes of the rollout KV cache.

    The prompts' [layers, batch, prompt_len, kv_heads, head_dim] (one copy per group, the
    `SharedPrefix`) and the samples' own [layers, batch x group, completion_len, kv_heads,
    head_dim], for keys and again for values; rows split over data x fsdp and KV heads over
    tensor, each only when the split divides.
    """
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

    Counted (in the compute dtype unless noted), with the head and MLP parts split over
    `tensor` when it divides them:
      residual stream: the layer input, the residual after attention, and the two RMSNorm
        outputs (4 x hidden; not split over tensor);
      attention: q, k, v projections and RoPE'd q, k (2 x (hidden + kv_heads x head_dim) +
        kv_heads x head_dim), the attention output before o_proj (hidden), and the softmax
        weights of every query over its num_keys keys (heads x num_keys, once in float32 and once
        cast: `dot_product_attention` materialises the full score matrix);
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
