"""Rematerialised decoder layers give the same loss and gradients as stored activations."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.remat import set_remat
from tests.models.switch_equality import assert_switch_keeps_value_and_grad
from tests.models.tiny import AUDIO_ID, TINY, random_model


def test_remat_matches_stored_activations():
    model = random_model(TINY["qwen2_audio"].config)
    graphdef, params = nnx.split(model)
    ids = jax.random.randint(jax.random.key(1), (2, 12), 4, AUDIO_ID)  # text only
    mask = jnp.ones((2, 12), jnp.int32).at[0, :3].set(0)

    def loss(p, remat):
        m = set_remat(nnx.merge(graphdef, p), remat)
        return jax.nn.log_softmax(m(ids, mask)).mean()

    plain = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
    rematted = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))(params)
    np.testing.assert_allclose(rematted[0], plain[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(rematted[1]), jax.tree.leaves(plain[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The rematerialised program recomputes: its jaxpr holds a checkpoint (remat) primitive.
    def recomputes(remat):
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(p, remat)))(params))
        return "remat" in jaxpr or "checkpoint" in jaxpr

    assert recomputes(True) and not recomputes(False)


def test_remat_in_the_grpo_update_path_matches_stored_activations():
    """The GRPO update's path: LoRA adapters split from the frozen rest, merged inside
    `jax.value_and_grad`, completions attending to their group's shared prompt (`prefix`).
    Rematerialisation used to fail there (nnx.remat wrote state back across trace levels)."""
    from sallm_jax.models.lora import LoRAParam, apply_lora
    from sallm_jax.rl.policy import completion_logprobs, merge_policy
    config = TINY["granite_speech"].config
    model = apply_lora(random_model(config), rank=2, alpha=4, rngs=nnx.Rngs(1))
    graphdef, adapters, frozen = nnx.split(model, LoRAParam, ...)
    adapters = jax.tree.map(lambda x: x + 0.05, adapters)  # B != 0, so gradients reach A too
    rng = np.random.default_rng(0)
    prompt = np.array([3, *[config.audio_token_id] * 3, 9, 10], np.int32)
    batch = {"waveforms": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4000)), jnp.float32),
             "num_samples": jnp.array([4000, 3000], jnp.int32),
             "prompt_ids": jnp.asarray(np.stack([prompt, prompt])),
             "prompt_mask": jnp.ones((2, prompt.size), jnp.int32).at[1, 0].set(0)}
    ids = jnp.asarray(rng.integers(4, 40, (4, 5)), jnp.int32)
    mask = jnp.ones((4, 5), jnp.int32).at[1, 3:].set(0)

    def loss(p, remat):
        policy = set_remat(merge_policy(graphdef, p, frozen), remat)
        return completion_logprobs(policy, batch, ids, mask, group_size=2).sum()

    assert_switch_keeps_value_and_grad(loss, adapters)
