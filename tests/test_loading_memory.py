"""Loading and exporting a 1.5 B-parameter checkpoint hold one copy of the weights
(benchmarks/loading_memory.py), and the streamed export writes what it read."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import loading_memory
from sallm_jax.models.hub.safetensors_io import SafetensorsDir

FIXED_BYTES = 256 * 2**20  # allowance above the runtime's resident start-up size


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_load_and_export_peak_within_one_and_a_quarter_copies(tmp_path):
    figures = loading_memory.run(str(tmp_path))
    assert figures["num_params"] >= 1.5e9
    params = figures["param_bytes"]
    assert params == 4 * figures["num_params"]  # float32, every tensor loaded
    budget = 1.25 * params + figures["before_load"] + FIXED_BYTES
    assert figures["load_peak"] <= budget, loading_memory.report(figures)
    assert figures["export_peak"] <= budget, loading_memory.report(figures)
    with SafetensorsDir(tmp_path / "source") as source, \
            SafetensorsDir(tmp_path / "exported") as exported:
        assert sorted(source) == sorted(exported)
        for key in source:
            np.testing.assert_array_equal(exported[key], source[key])
