"""Granite decoder-only language model (transformers' `GraniteModel` + head) in Flax NNX.

Llama layout without biases (pre-RMSNorm, grouped-query attention, rotate-half RoPE, SiLU-gated
MLP), plus Granite's four scalar multipliers, applied where transformers 5.23 applies them:
  - inputs_embeds * embedding_multiplier at the top of the decoder (`GraniteModel.forward`), i.e.
    on whatever embeddings come in: in Granite Speech the audio embeddings are merged into the
    token embeddings first, so they are multiplied too;
  - attention logits scaled by attention_multiplier instead of head_dim**-0.5;
  - each residual branch: x + branch(x) * residual_multiplier;
  - logits / logits_scaling only when `config.apply_logits_scaling` (see below).

Logits convention. `GraniteForCausalLM` divides its logits by `logits_scaling`, but transformers
5.23's `GraniteSpeechForConditionalGeneration` wraps a head-less `GraniteModel` and applies its own
`lm_head` with no division (4.x wrapped `GraniteForCausalLM`, so it did divide). The default,
`apply_logits_scaling=False`, matches the 5.23 speech wrapper exactly (that is what the parity
tests pin); set it True to get `GraniteForCausalLM`'s logits (= 5.23 wrapper logits /
logits_scaling), the distribution a sampling temperature of 1 refers to in 4.x and in text-only
Granite. Greedy decoding is the same either way.

`GraniteLM` is a `Qwen2LM` built with Granite's layer options (no q/k/v biases, attention and
residual multipliers), so the parameter paths, `init_cache(config.text, ...)` and the cache
contract of `Qwen2LM` hold unchanged; it adds the embedding multiplier and the logits scaling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.granite_speech.config import GraniteTextConfig
from sallm_jax.models.kv_cache import KVCache, SharedPrefix
from sallm_jax.models.qwen2 import Qwen2LM


class GraniteLM(Qwen2LM):
    """Token embeddings, decoder layers, final norm and LM head (tied or not).

    `embed` returns embeddings *before* embedding_multiplier; `__call__` applies it.
    """

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
        """`Qwen2LM.__call__` on inputs_embeds * embedding_multiplier.

        inputs_embeds [batch, seq, hidden] are unscaled, as `embed` returns them (audio merged
        in); the multiplier is applied here, as transformers' `GraniteModel` does.
        """
        x = inputs_embeds.astype(self.dtype) * self.config.embedding_multiplier
        return super().__call__(x, positions, key_mask, cache, cache_index, last_only, prefix)
