"""A resumed stage whose best-on-validation record was voided by a kill scores the parameters it
resumed with, and records them at the step they were taken at, not at step 0."""

from __future__ import annotations

import json
import logging

from tests.train.test_loop import Steps, make_loop


def test_the_resumed_parameters_are_recorded_at_their_step(tmp_path, small_sqa, caplog):
    first = make_loop(tmp_path, small_sqa, steps=6, validate=lambda p: 1.0, eval_every=2)
    first.cfg.steps = 4  # stop after step 4, as a kill after its checkpoint would
    first.run(Steps(first))
    (tmp_path / "best.json").write_text("")  # the kill emptied the record

    scores = iter([10.0, 9.0])  # the resumed parameters score best
    again = make_loop(tmp_path, small_sqa, steps=6, validate=lambda p: next(scores),
                      eval_every=2)
    with caplog.at_level(logging.INFO):
        again.run(Steps(again))
    scored = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[best] step")]
    assert scored == ["[best] step 4: validation score 10.000",
                      "[best] step 6: validation score 9.000"]
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "step": 4, "score": 10.0, "directory": "best-4"}
