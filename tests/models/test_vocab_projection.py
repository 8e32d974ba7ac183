"""`vocab_logits` against autodiff of the plain float32-output einsum: equal in float32, within
bfloat16's rounding in bfloat16, and its gradient program holds no float32 copy of the kernel
(which the plain einsum's backward pass converts whole)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.models.vocab_projection import vocab_logits


def plain(hidden, kernel):
    return jnp.einsum("bsh,hv->bsv", hidden, kernel, preferred_element_type=jnp.float32)


def loss(project, hidden, kernel, targets):
    """Mean negative log-likelihood of `targets` [batch, seq] under the projection."""
    logp = jax.nn.log_softmax(project(hidden, kernel), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()


def inputs(dtype):
    keys = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(keys[0], (2, 5, 32)).astype(dtype)
    kernel = (0.2 * jax.random.normal(keys[1], (32, 300))).astype(dtype)
    targets = jax.random.randint(keys[2], (2, 5), 0, 300)
    return hidden, kernel, targets


def test_float32_values_and_gradients_equal_autodiff():
    hidden, kernel, targets = inputs(jnp.float32)
    ours = jax.value_and_grad(lambda h, k: loss(vocab_logits, h, k, targets), (0, 1))(
        hidden, kernel)
    reference = jax.value_and_grad(lambda h, k: loss(plain, h, k, targets), (0, 1))(
        hidden, kernel)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bfloat16_gradients_match_float32_within_rounding():
    hidden, kernel, targets = inputs(jnp.bfloat16)
    grads = jax.grad(lambda h, k: loss(vocab_logits, h, k, targets), (0, 1))(hidden, kernel)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
    exact = jax.grad(lambda h, k: loss(plain, h, k, targets), (0, 1))(
        hidden.astype(jnp.float32), kernel.astype(jnp.float32))
    for got, want in zip(grads, exact, strict=True):
        got, want = np.asarray(got, np.float32), np.asarray(want)
        # bfloat16 keeps 8 significant bits: the cotangent's and the result's rounding.
        np.testing.assert_allclose(got, want, atol=2 ** -7 * np.abs(want).max())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU buffer assignment")
def test_the_backward_pass_converts_no_kernel_to_float32():
    hidden = jax.ShapeDtypeStruct((1, 16, 512), jnp.bfloat16)
    kernel = jax.ShapeDtypeStruct((512, 32768), jnp.bfloat16)
    targets = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    kernel_f32 = 512 * 32768 * 4

    def temp_bytes(project):
        grad = jax.grad(lambda h, k, t: loss(project, h, k, t))
        return jax.jit(grad).lower(hidden, kernel, targets).compile().memory_analysis(
        ).temp_size_in_bytes

    assert temp_bytes(plain) >= kernel_f32  # the hazard: the kernel converted whole
    assert temp_bytes(vocab_logits) < kernel_f32 // 4
