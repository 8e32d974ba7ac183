"""A split the run reads with no usable row stops the run at start-up with one line naming its
manifest and the skips by reason, exit status 2: an empty manifest (it used to stop with "the
global batch (4 rows) is larger than every bucket of 0 examples"), a header-only one, or one
whose every row the skip policy left out (for a scored split that used to surface later as
`KeyError: 'bleu'`). Splits the run does not read are not checked."""

import collections
import json
import os
import re
import subprocess
import sys

import pytest
from sallm_jax.configs.aqa_grpo import get_config as aqa_config
from sallm_jax.configs.base import base_config

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.run.splits import EmptySplit, check_rows_left, scored_splits, splits_used

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's prefix: level, date, time


def test_the_splits_a_run_scores():
    cfg = base_config()  # eval of "test"; sft and rl select on validation every 25 steps
    assert scored_splits(cfg) == ["test", "validation"]
    cfg.sft.eval_every = cfg.grpo.eval_every = 0
    assert scored_splits(cfg) == ["test"]
    cfg.stages = ("base", "warmup", "sft")  # no eval stage, no selection
    assert scored_splits(cfg) == []
    cfg.base.eval_every = 5  # the base validates on its own corpus, not the task's split
    assert scored_splits(cfg) == []
    aqa = aqa_config("paper")  # GRPO from the checkpoint, selecting on validation
    assert scored_splits(aqa) == ["test", "validation"]


def test_the_splits_a_run_reads():
    cfg = base_config()
    assert splits_used(cfg) == ["train", "test", "validation"]
    cfg.stages = ("base", "eval")  # the base trains on its own corpus
    assert splits_used(cfg) == ["test"]


def test_an_empty_split_names_its_manifest(tmp_path):
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    with pytest.raises(EmptySplit, match=r"^t\.jsonl: the train split has no rows"):
        check_rows_left("train", "t.jsonl", 0, 0, collections.Counter(), log)
    skipped = collections.Counter({"missing audio file": 2, "bad manifest line": 1})
    with pytest.raises(EmptySplit, match=r"^v\.jsonl: every row of the validation split was left "
                                         r"out .*\(3 skipped: bad manifest line: 1, missing audio "
                                         r"file: 2; each in .*skipped\.jsonl\)"):
        check_rows_left("validation", "v.jsonl", 2, 0, skipped, log)
    check_rows_left("validation", "v.jsonl", 2, 1, skipped, log)  # one row left: nothing raised


def write_rows(path, n, **fields):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "audio": f"audio/{i}.wav", "task": "sqa",
                                "question": "Where?", "answer": "Home.", **fields}) + "\n")
    return path


def run(tmp_path, train, policy):
    """The main command on a manifest `train` split (and a test split of missing clips), no base
    stage: (exit status, stderr lines)."""
    test = write_rows(tmp_path / "test.jsonl", 2)
    out = subprocess.run(
        [sys.executable, "-m", "sallm_jax.main", "--config=sqa_grpo:smoke",
         f"--workdir={tmp_path / 'run'}", "--config.data.name=manifest",
         f"--config.data.train_manifest={train}", f"--config.data.test_manifest={test}",
         "--config.stages=('warmup', 'eval')", "--config.warmup.start=init",
         f"--config.data.on_bad_input={policy}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "SALLM_JAX_CACHE": str(tmp_path / "cache")})
    return out.returncode, out.stderr.splitlines()


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_an_empty_manifest_stops_at_start_up(tmp_path, policy):
    (tmp_path / "train.jsonl").write_text("\n")
    status, stderr = run(tmp_path, tmp_path / "train.jsonl", policy)
    assert status == 2 and stderr == [
        f"error: {tmp_path / 'train.jsonl'}: the train split has no rows (the manifest holds no "
        "example), and the run needs it"]


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_header_only_manifest_stops_at_start_up(tmp_path, policy):
    train = tmp_path / "train.jsonl"
    train.write_text("id\taudio\ttask\tquestion\tanswer\n")
    status, stderr = run(tmp_path, train, policy)
    assert status == 2 and stderr[-1].startswith(
        f"error: {train}:1: invalid JSON" if policy == "error" else
        f"error: {train}: every row of the train split was left out under "
        f"data.on_bad_input=skip (1 skipped: bad manifest line: 1; each in "
        f"{tmp_path / 'run' / 'skipped.jsonl'})"), stderr
    assert len(stderr) == (1 if policy == "error" else 2)  # and a warning line per skip


def test_every_row_left_out_under_skip_stops_before_training(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", 3)  # none of the clips exists
    with open(train, "a") as f:
        f.write("{not json\n")
    status, stderr = run(tmp_path, train, "skip")
    assert status == 2, stderr
    assert stderr[-1] == (
        f"error: {train}: every row of the train split was left out under "
        f"data.on_bad_input=skip (4 skipped: bad manifest line: 1, missing audio file: 3; "
        f"each in {tmp_path / 'run' / 'skipped.jsonl'}), and the run needs it; fix or replace "
        "those rows")
    assert not any("[warmup]" in line for line in stderr)  # no training step ran
    assert len((tmp_path / "run" / "skipped.jsonl").read_text().splitlines()) == 4


def test_a_missing_clip_under_error_stops_before_training_with_one_line(tmp_path):
    """The error is one line, after the log's progress lines (the tokenizer is trained first:
    screening counts each prompt's tokens) and before any training step."""
    train = write_rows(tmp_path / "train.jsonl", 2)
    status, stderr = run(tmp_path, train, "error")
    assert status == 2, stderr
    assert [line for line in stderr if not LOG_LINE.match(line)] == [
        f"error: {tmp_path / 'audio' / '0.wav'}: missing audio file: no such file (example 'r0'; "
        "set data.on_bad_input=skip to leave such examples out)"]
    assert not any("[warmup]" in line for line in stderr)
