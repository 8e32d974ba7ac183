"""The moving reference's soft update against a hand-computed case and a NumPy restatement of
TR-DPO's pi_ref <- alpha pi_theta + (1 - alpha) pi_ref, and its schedule."""

import jax.numpy as jnp
import numpy as np

from sallm_jax.rl.reference import mixed_reference, sync_due


def test_a_hand_computed_mix():
    mixed = mixed_reference({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 0.0])}, 0.6)
    # 0.6 x 3 + 0.4 x 1 = 2.2; 0.6 x 0 + 0.4 x -2 = -0.8
    np.testing.assert_allclose(mixed["w"], [2.2, -0.8], rtol=1e-6)


def test_the_mix_against_numpy_in_each_leaf_dtype():
    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(size=(3, 4)).astype(np.float32),
           "b": {"c": rng.normal(size=5).astype(np.float32)},
           "h": rng.normal(size=6).astype(jnp.bfloat16)}
    policy = {k: (jnp.asarray(v) + 1.0).astype(v.dtype) if not isinstance(v, dict)
              else {"c": v["c"] * 2} for k, v in ref.items()}
    for alpha in (0.25, 1.0):
        mixed = mixed_reference(ref, policy, alpha)
        np.testing.assert_allclose(mixed["a"], alpha * (ref["a"] + 1) + (1 - alpha) * ref["a"],
                                   rtol=1e-6)
        np.testing.assert_allclose(mixed["b"]["c"],
                                   alpha * 2 * ref["b"]["c"] + (1 - alpha) * ref["b"]["c"],
                                   rtol=1e-6)
        assert mixed["h"].dtype == jnp.bfloat16
        expected = (alpha * np.asarray(policy["h"], np.float32)
                    + (1 - alpha) * np.asarray(ref["h"], np.float32))
        np.testing.assert_allclose(np.asarray(mixed["h"], np.float32), expected, rtol=1e-2)
    # alpha = 1 is the hard update: the policy itself
    np.testing.assert_array_equal(mixed_reference(ref, policy, 1.0)["a"], policy["a"])


def test_syncs_every_n_updates_as_trl_at_global_step_multiples():
    assert [u for u in range(1, 11) if sync_due(u, 4)] == [4, 8]
    assert [u for u in range(1, 4) if sync_due(u, 1)] == [1, 2, 3]
