"""BestKeeper's record: a new best is durable before the record names it, and a record that is
half-written or names a missing directory is discarded at start."""

from __future__ import annotations

import json
import logging

import jax.numpy as jnp
import numpy as np

from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.best import BestKeeper

PARTITIONER = Partitioner(make_mesh({"data": -1}), ())


def keeper(tmp_path, scores):
    """A keeper whose score of params {"w": [x]} is scores[x]."""
    return BestKeeper(tmp_path / "best", lambda p: scores[int(p["w"][0])], PARTITIONER)


def params(x):
    return {"w": jnp.array([float(x), 0.5])}


def test_a_new_best_replaces_the_old_after_it_is_saved(tmp_path):
    kept = keeper(tmp_path, {0: 1.0, 1: 3.0, 2: 2.0})
    kept.start(0, params(0))
    kept.consider(4, params(1))
    kept.consider(8, params(2))  # worse: nothing changes
    record = json.loads((tmp_path / "best.json").read_text())
    assert record == {"step": 4, "score": 3.0, "directory": "best-4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-4", "best.json"]
    restored = keeper(tmp_path, {}).best(params(9))
    np.testing.assert_array_equal(restored["w"], params(1)["w"])


def test_unreadable_or_dangling_records_are_discarded(tmp_path, caplog):
    kept = keeper(tmp_path, {0: 1.0})
    kept.start(0, params(0))
    with caplog.at_level(logging.WARNING):
        (tmp_path / "best.json").write_text('{"step": 4, "sco')  # killed mid-write
        assert keeper(tmp_path, {}).record is None
        (tmp_path / "best.json").write_text(json.dumps(
            {"step": 4, "score": 3.0, "directory": "best-4"}))  # names a deleted directory
        assert keeper(tmp_path, {}).record is None
    assert "unreadable" in caplog.text and "does not exist" in caplog.text
    again = keeper(tmp_path, {0: 1.0})
    again.start(0, params(0))  # scores the start again and writes a sound record
    assert json.loads((tmp_path / "best.json").read_text())["directory"] == "best-0"


def test_a_record_from_past_the_resumed_step_yields_to_an_earlier_tie(tmp_path):
    """Killed after step 6's new best was recorded but before its checkpoint, the stage resumes
    from step 2 and scores steps 4 and 6 again; the kept step is the uninterrupted run's: the
    first of the best scores (step 4, tied with 6)."""
    scores = {0: 0.1, 2: 0.3, 4: 0.5, 6: 0.5}
    alone = keeper(tmp_path / "alone", scores)
    alone.start(0, params(0))
    for step in (2, 4, 6):
        alone.consider(step, params(step))
    assert alone.record["step"] == 4

    cut = keeper(tmp_path / "cut", scores)
    cut.start(0, params(0))
    cut.consider(2, params(2))
    cut.record = None  # the record that step 6 wrote before the kill, with its parameters
    cut.consider(6, params(6))
    resumed = keeper(tmp_path / "cut", scores)
    resumed.start(2, params(2))  # the record is kept: not scored again
    for step in (4, 6):
        resumed.consider(step, params(step))
    assert resumed.record == alone.record | {"directory": "best-4"}
    np.testing.assert_array_equal(resumed.best(params(9))["w"], params(4)["w"])
