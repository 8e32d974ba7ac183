"""What a reward function may return: a real number (Python, NumPy, or a 0-d array) or None (not
applicable). Anything else, a numeric string included, is a failure of that reward on that
sample, logged with the value's type."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.rl.rewards import compute_rewards


def constant(value):
    return lambda completion, example: value


@pytest.mark.parametrize("value, type_name", [
    ("0.5", "str"), (b"1", "bytes"), ([0.5], "list"), (np.array([0.5]), "ndarray"),
    ({"score": 1.0}, "dict"), (1 + 0j, "complex")])
def test_a_value_that_is_not_a_real_number_fails(caplog, value, type_name):
    with caplog.at_level(logging.WARNING, logger="sallm_jax.rl.rewards"):
        scored = compute_rewards([constant(value), constant(2.0)], [1.0, 1.0], ["a", "b"],
                                 [{"answer": "x"}] * 2, failure_value=-1.0,
                                 names=["odd", "two"])
    assert scored.failures == {"odd": 2, "two": 0}
    np.testing.assert_array_equal(scored.per_fn, [[-1.0, 2.0], [-1.0, 2.0]])
    np.testing.assert_array_equal(scored.total, [1.0, 1.0])
    assert f"returned a {type_name}" in caplog.text
    assert "reward odd failed on 2 of 2 completions" in caplog.text


@pytest.mark.parametrize("value", [0.25, 1, True, np.float32(0.25), np.int64(3),
                                   np.array(0.25), jnp.float32(0.25)])
def test_real_numbers_are_scored(value):
    scored = compute_rewards([constant(value)], [2.0], ["a"], [{"answer": "x"}])
    assert sum(scored.failures.values()) == 0
    np.testing.assert_allclose(scored.per_fn, [[float(value)]])
    np.testing.assert_allclose(scored.total, [2.0 * float(value)])


def test_none_is_not_applicable_not_a_failure():
    scored = compute_rewards([constant(None), constant(0.5)], [1.0, 1.0], ["a"],
                             [{"answer": "x"}], names=["none", "half"])
    assert scored.failures == {"none": 0, "half": 0}
    assert np.isnan(scored.per_fn[0, 0]) and scored.total[0] == 0.5
