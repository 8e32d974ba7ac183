"""The learning-rate schedule against its formula: linear warm-up from 0, then cosine decay to
10 % of the peak; no warm-up means the first update has the full rate."""

import math

import numpy as np
import pytest

from sallm_jax.train.state import learning_rate_schedule


def reference(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_schedule_matches_the_formula(warmup):
    schedule = learning_rate_schedule(3e-4, warmup, 40)
    got = [float(schedule(s)) for s in range(45)]
    want = [reference(s, 3e-4, warmup, 40) for s in range(45)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert got[0] == pytest.approx(3e-4 if warmup == 0 else 0.0)
