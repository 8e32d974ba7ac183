"""Checks that a model switch (remat, the layer scan) leaves a loss and its gradients alone."""

import jax
import numpy as np


def assert_switch_keeps_value_and_grad(loss, params) -> None:
    """`loss(params, on)` for on in (False, True): equal values (1e-6) and gradients (1e-5 with
    an absolute 1e-6 floor), every gradient leaf nonzero so that none is compared vacuously."""
    off = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
    on = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))(params)
    np.testing.assert_allclose(on[0], off[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(on[1]), jax.tree.leaves(off[1]), strict=True):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
