"""A split the run scores on whose every row the skip policy left out stops the run at the
start, saying so (it used to surface later as `KeyError: 'bleu'`); splits the run does not score
are not checked."""

import numpy as np
import pytest

from sallm_jax.configs.aqa_grpo import get_config as aqa_config
from sallm_jax.configs.base import base_config
from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.experiment import EmptySplit, check_rows_left, scored_splits


def test_the_splits_a_run_scores():
    cfg = base_config()  # eval of "test"; sft and rl select on validation every 25 steps
    assert scored_splits(cfg) == ["test", "validation"]
    cfg.sft.eval_every = cfg.rl.eval_every = 0
    assert scored_splits(cfg) == ["test"]
    cfg.stages = ("base", "warmup", "sft")  # no eval stage, no selection
    assert scored_splits(cfg) == []
    cfg.base.eval_every = 5  # the base validates on its own corpus, not the task's split
    assert scored_splits(cfg) == []
    aqa = aqa_config("paper")  # GRPO from the checkpoint, selecting on validation
    assert scored_splits(aqa) == ["test", "validation"]


def test_a_split_left_empty_stops_with_its_name(tmp_path):
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    log.handle("r0", "a.wav", "missing audio file", "no such file")
    rows = [ManifestRow(id="r0", audio="a.wav", task="sqa", question="q", answer="a")]
    with pytest.raises(EmptySplit, match=r"every row of the validation split \(1\).*"
                                         r"1 examples skipped.*skipped\.jsonl"):
        check_rows_left("validation", rows, np.array([-1]), log)
    check_rows_left("validation", rows, np.array([0]), log)  # one row left: nothing raised
