"""Masked multi-head attention and the initialiser helper shared by the encoder and decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Masked logits take the most negative finite float32 instead of -inf: a query whose keys are
# all masked (a padding position) then gets a uniform softmax rather than NaN, which would
# otherwise leak into gradients through 0 * NaN.
MASK_VALUE = float(jnp.finfo(jnp.float32).min)

INIT_STD = 0.02


def normal_init(names: tuple[str | None, ...]) -> nnx.Initializer:
    """N(0, 0.02) initialiser that records logical axis `names` for sharding rules.

    The names land in the variable metadata as `out_sharding` (read them with
    `nnx.get_partition_spec`). Eager sharding is off so that a model can be built without a mesh
    (tests, CPU); the training code shards the state through its jit's out_shardings.
    """
    return nnx.with_partitioning(nnx.initializers.normal(INIT_STD), names, eager_sharding=False)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float
) -> jax.Array:
    """Grouped-query attention with a boolean mask; softmax in float32.

    Args:
      q: queries [batch, q_len, num_heads, head_dim].
      k: keys [batch, kv_len, num_kv_heads, head_dim]; num_heads is a multiple of num_kv_heads and
        query head h reads key head h // (num_heads // num_kv_heads), as transformers' `repeat_kv`.
      v: values [batch, kv_len, num_kv_heads, head_dim].
      mask: [batch, q_len, kv_len] bool, True where query i may attend to key j.
      scale: multiplies the logits (1.0 when the queries are already scaled).

    Returns:
      [batch, q_len, num_heads * head_dim] in the dtype of `v`.
    """
    batch, q_len, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    groups = num_heads // num_kv_heads
    q = q.reshape(batch, q_len, num_kv_heads, groups, head_dim)
    logits = jnp.einsum("bshgd,bkhd->bhgsk", q, k, preferred_element_type=jnp.float32)
    logits = logits * scale
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhgsk,bkhd->bshgd", probs, v)
    return out.reshape(batch, q_len, num_heads * head_dim)


def fused_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float
) -> jax.Array:
    """`dot_product_attention` through `jax.nn.dot_product_attention`: cuDNN's fused kernel on
    a GPU for bfloat16 / float16 inputs, JAX's XLA reference path everywhere else.

    Same arguments and result. The XLA path matches `dot_product_attention` to float rounding
    (tests/models/test_fused_attention.py); cuDNN accumulates in float32 but in another order.
    """
    batch, q_len, num_heads, head_dim = q.shape
    cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale,
                                       implementation="cudnn" if cudnn else "xla")
    return out.reshape(batch, q_len, num_heads * head_dim)


def set_fused_attention(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch `fused_attention` on or off for every decoder attention (a module with
    `.fused`); passes that attend to a shared prompt (`prefix_attention`) keep their own."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "fused") and isinstance(module.fused, bool):
            module.fused = enabled
    return model


def prefix_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    prefix_k: jax.Array,
    prefix_v: jax.Array,
    prefix_mask: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """`dot_product_attention` of rows that continue shared prompts: row n = b * G + g attends
    to prompt b's keys (`prefix_k[b]` where `prefix_mask[b]`) and to its own (`k[n]` where
    `mask[n]`), in one softmax over both.

    Equal to `dot_product_attention` on each row's prompt keys concatenated with its own, but
    the prompt is read once per group: its logits are one [G * q_len * groups, head_dim] x
    [head_dim, prefix_len] matmul per prompt and key head rather than G small ones.

    Args:
      q: [batch * G, q_len, num_heads, head_dim].
      k, v: [batch * G, kv_len, num_kv_heads, head_dim], the rows' own keys and values.
      mask: [batch * G, q_len, kv_len] bool.
      prefix_k, prefix_v: [batch, prefix_len, num_kv_heads, head_dim].
      prefix_mask: [batch, prefix_len] bool.
      scale: multiplies the logits.

    Returns:
      [batch * G, q_len, num_heads * head_dim] in the dtype of `v`.
    """
    rows, q_len, num_heads, head_dim = q.shape
    batch, prefix_len, num_kv_heads, _ = prefix_k.shape
    group, heads_per_kv = rows // batch, num_heads // num_kv_heads
    q = q.reshape(batch, group, q_len, num_kv_heads, heads_per_kv, head_dim)
    k = k.reshape(batch, group, -1, num_kv_heads, head_dim)
    v = v.reshape(batch, group, -1, num_kv_heads, head_dim)
    shared = jnp.einsum("bnshgd,bphd->bnhgsp", q, prefix_k, preferred_element_type=jnp.float32)
    shared = jnp.where(prefix_mask[:, None, None, None, None, :], shared * scale, MASK_VALUE)
    own = jnp.einsum("bnshgd,bnkhd->bnhgsk", q, k, preferred_element_type=jnp.float32)
    own_mask = mask.reshape(batch, group, q_len, -1)[:, :, None, None]
    own = jnp.where(own_mask, own * scale, MASK_VALUE)
    probs = jax.nn.softmax(jnp.concatenate([shared, own], axis=-1), axis=-1).astype(v.dtype)
    out = jnp.einsum("bnhgsp,bphd->bnshgd", probs[..., :prefix_len], prefix_v) + jnp.einsum(
        "bnhgsk,bnkhd->bnshgd", probs[..., prefix_len:], v
    )
    return out.reshape(rows, q_len, num_heads * head_dim)
