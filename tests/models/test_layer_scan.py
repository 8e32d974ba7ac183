"""The layer scan (models/layer_scan.py) against the unrolled loop of decoder layers: the GRPO
update's loss and gradients (with and without remat), sampled rollouts through the KV cache and
a shared prompt, the stack built once outside the decode loop, and layers that cannot stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.layer_scan import set_scan_layers
from sallm_jax.models.lora import LoRAParam, apply_lora
from sallm_jax.models.remat import set_remat
from sallm_jax.rl.policy import completion_logprobs, merge_policy
from sallm_jax.rl.rollout import SamplingConfig, rollout
from tests.models.switch_equality import assert_switch_keeps_value_and_grad
from tests.models.tiny import TINY, random_model

CONFIG = TINY["granite_speech"].config

GROUP = 2


@pytest.fixture(scope="module")
def split_model():
    model = apply_lora(random_model(CONFIG), rank=2, alpha=4, rngs=nnx.Rngs(1))
    graphdef, adapters, frozen = nnx.split(model, LoRAParam, ...)
    return graphdef, jax.tree.map(lambda x: x + 0.05, adapters), frozen  # B != 0


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    prompt = np.array([3, *[CONFIG.audio_token_id] * 3, 9, 10], np.int32)
    return {"waveforms": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4000)), jnp.float32),
            "num_samples": jnp.array([4000, 3000], jnp.int32),
            "prompt_ids": jnp.asarray(np.stack([prompt, prompt])),
            "prompt_mask": jnp.ones((2, prompt.size), jnp.int32).at[1, 0].set(0)}


def policy(split_model, params, *, scan: bool, remat: bool = False):
    graphdef, _, frozen = split_model
    model = set_remat(merge_policy(graphdef, params, frozen), remat)
    return set_scan_layers(model, scan)


@pytest.mark.parametrize("remat", [False, True])
def test_update_loss_and_gradients_equal_the_unrolled_layers(split_model, batch, remat):
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(4, 40, (4, 5)), jnp.int32)
    mask = jnp.ones((4, 5), jnp.int32).at[1, 3:].set(0)

    def loss(p, scan):
        model = policy(split_model, p, scan=scan, remat=remat)
        return completion_logprobs(model, batch, ids, mask, group_size=GROUP).sum()

    adapters = split_model[1]
    assert_switch_keeps_value_and_grad(loss, adapters)

    # The scanned program holds one layer's body: its jaxpr has a scan and is shorter.
    def jaxpr(scan):
        return jax.make_jaxpr(jax.grad(lambda p: loss(p, scan)))(adapters)

    assert "scan" in str(jaxpr(True)) and "scan" not in str(jaxpr(False))


def test_sampled_rollouts_equal_the_unrolled_layers(split_model, batch):
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0)

    def sample(scan):
        model = policy(split_model, split_model[1], scan=scan)
        return jax.jit(lambda b: rollout(model, b, jax.random.key(3), sampling=sampling,
                                         group_size=GROUP, eos_ids=(1,), pad_id=0))(batch)

    loop, scanned = sample(False), sample(True)
    np.testing.assert_array_equal(scanned.ids, loop.ids)
    np.testing.assert_array_equal(scanned.mask, loop.mask)
    np.testing.assert_allclose(scanned.logp, loop.logp, rtol=1e-5, atol=1e-6)


def _stacks_of(jaxpr, shape) -> int:
    """How many equations of `jaxpr` (sub-jaxprs included) build an array of `shape` by
    stacking, concatenation or filling: one weight stacked over the layers."""
    count = 0
    building = ("concatenate", "dynamic_update_slice", "broadcast_in_dim")
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in building and eqn.outvars[0].aval.shape == shape:
            count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    count += _stacks_of(getattr(inner, "jaxpr", inner), shape)
    return count


def test_the_rollout_reads_the_stored_stack(split_model, batch):
    """With the layers stored stacked no program stacks a weight: not the prefill, not the
    decode loop (stacking in a program copies the decoder's weights; in every decode step,
    once per token)."""
    model = policy(split_model, split_model[1], scan=True)
    sampling = SamplingConfig(max_new_tokens=4, temperature=1.0)
    closed = jax.make_jaxpr(lambda b: rollout(model, b, jax.random.key(0), sampling=sampling,
                                              group_size=GROUP, eos_ids=(1,), pad_id=0))(batch)
    text = CONFIG.text
    down = (text.num_hidden_layers, text.intermediate_size, text.hidden_size)  # one weight's
    assert model.language_model.layers.layer.mlp.down_proj.kernel[...].shape == down
    assert _stacks_of(closed.jaxpr, down) == 0
    # Stacked inside the program, the same rollout stacks it once (the count's control).
    graphdef, state = nnx.split(policy(split_model, split_model[1], scan=False))

    def stacked_inside(b):
        return rollout(set_scan_layers(nnx.merge(graphdef, state), True), b, jax.random.key(0),
                       sampling=sampling, group_size=GROUP, eos_ids=(1,), pad_id=0)

    inside = jax.make_jaxpr(stacked_inside)(batch)
    assert _stacks_of(inside.jaxpr, down) > 0


def test_layers_of_different_structure_cannot_scan():
    model = random_model(CONFIG)
    apply_lora(model.language_model.layers[0], rank=2, alpha=4, rngs=nnx.Rngs(1), scope=None)
    with pytest.raises(ValueError, match="decoder layer 1 differs in structure from layer 0"):
        set_scan_layers(model, True)
