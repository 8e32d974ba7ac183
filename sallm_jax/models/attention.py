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
    """N(0, 0.02) initialiser with logical axis `names` (`out_sharding`), not sharded eagerly."""
    return nnx.with_partitioning(nnx.initializers.normal(INIT_STD), names, eager_sharding=False)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float
) -> jax.Array:
    """Grouped-query attention with a boolean mask, softmax in float32.

    q [batch, q_len, heads, head_dim]; k, v [batch, kv_len, kv_heads, head_dim] (query head h reads
    key head h // (heads // kv_heads), as transformers' `repeat_kv`); mask [batch, q_len, kv_len]
    bool, True where query i may attend to key j; `scale` multiplies the logits (1.0 for pre-scaled
    queries). Returns [batch, q_len, heads * head_dim] in v's dtype.
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
    """`dot_product_attention` via `jax.nn.dot_product_attention` (cuDNN: bf16 / f16 on a GPU)."""
    batch, q_len, num_heads, head_dim = q.shape
    cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale,
                                       implementation="cudnn" if cudnn else "xla")
    return out.reshape(batch, q_len, num_heads * head_dim)


def set_fused_attention(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switches `fused_attention` for every module with a bool `.fused`; prefix passes ignore it."""
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
    """`dot_product_attention` of row n = b * G + g over prompt b's keys and its own, one softmax.

    q [batch * G, q_len, heads, head_dim] -> [batch * G, q_len, heads * head_dim] in v's dtype. The
    rows' own k, v: [batch * G, kv_len, kv_heads, head_dim], mask: [batch * G, q_len, kv_len]; the
    prompts' prefix_k, prefix_v: [batch, prefix_len, kv_heads, head_dim], prefix_mask: [batch,
    prefix_len]. Equal to attending to the concatenated keys; each prompt is read once per group.
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
