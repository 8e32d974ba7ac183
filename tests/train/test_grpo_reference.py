"""The GRPO stage's reference: None (the policy with its adapters off) needs LoRA adapters when
the loss has a KL term."""

import pytest
from flax import nnx

from sallm_jax.models.families import families
from sallm_jax.models.lora import apply_lora, trainable_filter
from sallm_jax.train.grpo_stage import check_reference


def tiny_model():
    family = families()["qwen2_audio"]
    sizes = family.tiny_sizes()
    config = family.from_sizes(sizes["audio"], sizes["text"], vocab_size=64, audio_token_id=3)
    return family.model_class(config, rngs=nnx.Rngs(0))


def test_no_reference_without_adapters_is_refused_under_a_kl_term():
    _, params, frozen = nnx.split(tiny_model(), nnx.Param, ...)
    with pytest.raises(ValueError, match="the KL term would be 0 at every step"):
        check_reference(None, params, frozen, beta=0.04)
    check_reference(None, params, frozen, beta=0.0)  # no KL term: no reference at all
    check_reference(params, params, frozen, beta=0.04)  # a reference of its own
    check_reference(None, params, frozen, beta=0.04, moving=True)  # starts from the policy


def test_no_reference_is_the_adapter_free_policy_under_lora():
    model = tiny_model()
    apply_lora(model, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    _, adapters, frozen = nnx.split(model, trainable_filter("adapters"), ...)
    check_reference(None, adapters, frozen, beta=0.04)
