"""Granite decoder (transformers' `GraniteModel` + head): a `Qwen2LM` with Granite's options.

No q/k/v biases; as transformers 5.23: inputs_embeds * embedding_multiplier at the decoder's top
(merged audio embeddings included); attention logits * attention_multiplier (not head_dim**-0.5);
each residual branch * residual_multiplier. Logits are divided by logits_scaling only with
`config.apply_logits_scaling`: off matches 5.23's `GraniteSpeechForConditionalGeneration` (the
parity tests), on gives `GraniteForCausalLM`'s logits, which 4.x and text-only Granite sample at
temperature 1. Greedy decoding is the same either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.granite_speech.config import GraniteTextConfig
from sallm_jax.models.kv_cache import KVCache, SharedPrefix
from sallm_jax.models.qwen2 import Qwen2LM


class GraniteLM(Qwen2LM):
    """A `Qwen2LM` with Granite's options; `embed` returns them before embedding_multiplier."""

    def __init__(
        self,
        config: GraniteTextConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        super().__init__(
            config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            qkv_bias=False,
            attention_scale=config.attention_multiplier,
            residual_multiplier=config.residual_multiplier,
        )

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final-normed hidden [batch, seq, hidden] -> float32 logits [batch, seq, vocab], divided
        by logits_scaling when `config.apply_logits_scaling`."""
        logits = super().logits(hidden)
        if self.config.apply_logits_scaling:
            logits = logits / self.config.logits_scaling
        return logits

    def __call__(
        self,
        inputs_embeds: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: KVCache | None = None,
        cache_index: jax.Array | int = 0,
        last_only: bool = False,
        prefix: SharedPrefix | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """`Qwen2LM.__call__` on inputs_embeds [batch, seq, hidden] * embedding_multiplier."""
        x = inputs_embeds.astype(self.dtype) * self.config.embedding_multiplier
        return super().__call__(x, positions, key_mask, cache, cache_index, last_only, prefix)
