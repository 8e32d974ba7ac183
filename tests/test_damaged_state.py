"""Damaged state on disk, made on purpose: the latest checkpoint of a stage cut short, half
deleted or emptied (the stage resumes from the one before, and says which it skipped and why;
with none readable it stops naming the folder), a finished stage's or the cached base model's
parameters or tokenizer damaged (built again, never loaded half), and record files cut short
mid-line by a kill (repaired when the run starts again)."""

import json
import logging
import pathlib
import shutil
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sallm_jax.configs.base import apply_smoke, base_config

from sallm_jax.commands import grpo_vs_sft
from sallm_jax.data.bad_input import SkipLog
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.runtime.user_errors import UserError
from sallm_jax.stages import base_model, common
from sallm_jax.train import base
from tests.train.test_loop import Steps, make_loop

PARTITIONER = Partitioner(make_mesh({"data": -1}), ())


def cut_short(folder: pathlib.Path) -> None:
    """Every file under `folder` cut to half its length, as a write stopped part way leaves it."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def half_deleted(folder: pathlib.Path) -> None:
    """The train state's item gone, the data iterator's left: an `rm -r` stopped part way."""
    shutil.rmtree(folder / "state")


def emptied(folder: pathlib.Path) -> None:
    for path in list(folder.iterdir()):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize("damage", [cut_short, half_deleted, emptied])
def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(tmp_path, small_sqa, caplog,
                                                                  damage):
    alone = make_loop(tmp_path / "alone", small_sqa, steps=6)
    alone_steps = Steps(alone)
    expected = alone.run(alone_steps)

    first = make_loop(tmp_path / "cut", small_sqa, steps=6)
    first.cfg.steps = 4  # checkpoints 2 and 4, as a kill after step 4's save leaves them
    first.run(Steps(first))
    checkpoints = tmp_path / "cut" / "checkpoints"
    damage(checkpoints / "4")
    with caplog.at_level(logging.WARNING):
        again = make_loop(tmp_path / "cut", small_sqa, steps=6)
    assert again.resumed and again.step == 2
    skipped = [r.getMessage() for r in caplog.records if "[toy] checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and str(checkpoints / "4") in skipped[0], caplog.text
    assert "cannot be read (" in skipped[0] and "resuming from step 2" in skipped[0]
    again_steps = Steps(again)
    resumed = again.run(again_steps)
    # Steps 3 and 4 run again on the batches they had: the uninterrupted run's parameters.
    assert alone_steps.indices[2:] == again_steps.indices
    np.testing.assert_array_equal(np.asarray(resumed["w"][...]), np.asarray(expected["w"][...]))
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [4, 6]
    assert (tmp_path / "cut" / "checkpoints.unreadable" / "4").is_dir()  # kept, not deleted


def test_no_readable_checkpoint_stops_with_the_folder(tmp_path, small_sqa):
    first = make_loop(tmp_path, small_sqa, steps=4)
    first.run(Steps(first))
    checkpoints = tmp_path / "checkpoints"
    cut_short(checkpoints / "4")
    half_deleted(checkpoints / "2")
    with pytest.raises(UserError) as raised:
        make_loop(tmp_path, small_sqa, steps=6)
    message = str(raised.value)
    assert str(checkpoints) in message and "\n" not in message
    assert "step 4" in message and "step 2" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "4"]  # left for the user


class Line(nnx.Module):
    def __init__(self, value: float = 0.0):
        self.w = nnx.Param(jnp.full((3,), value))


def params_of(value: float) -> nnx.State:
    return nnx.split(Line(value))[1]


def fake_build(monkeypatch, built: float):
    """`train_base`'s training and held-out pass replaced: training returns parameters of value
    `built`; the calls are counted."""
    calls = []

    def run_sft(section, **kwargs):
        calls.append("train")
        return params_of(built)

    def evaluate(*args, **kwargs):
        calls.append("heldout")
        return {"wer": 50.0, "num_examples": 4}

    monkeypatch.setattr(base_model, "run_sft", run_sft)
    monkeypatch.setattr(base_model, "evaluate", evaluate)
    return calls


def base_experiment(tmp_path):
    cfg = apply_smoke(base_config())
    return types.SimpleNamespace(
        cfg=cfg, base_dir=tmp_path / "base" / "key", partitioner=PARTITIONER, graphdef=None,
        frozen=None, corpus={"train": [], "validation": []}, chat=None, skip_log=None,
        workdir=tmp_path / "run", spec=lambda *args: None)


@pytest.mark.parametrize("damage", ["params cut short", "params half deleted",
                                    "base.json cut short"])
def test_a_damaged_base_cache_is_built_again(tmp_path, monkeypatch, caplog, damage):
    experiment = base_experiment(tmp_path)
    directory = experiment.base_dir
    fake_build(monkeypatch, built=1.0)
    base_model.train_base(experiment, "base", params_of(0.0))
    assert base.is_built(directory)
    if damage == "params cut short":
        cut_short(directory / "params")
    elif damage == "params half deleted":
        for path in sorted((directory / "params").rglob("*"))[::2]:
            if path.is_file():
                path.unlink()
    else:
        record = (directory / "base.json").read_text()
        (directory / "base.json").write_text(record[:len(record) // 2])
    calls = fake_build(monkeypatch, built=1.0)
    with caplog.at_level(logging.WARNING):
        params = base_model.train_base(experiment, "base", params_of(0.0))
    np.testing.assert_array_equal(np.asarray(params["w"][...]), [1.0, 1.0, 1.0])
    assert calls == ["train", "heldout"], calls  # built again, not loaded
    assert str(directory) in caplog.text
    record = json.loads((directory / "base.json").read_text())
    assert record["heldout_asr"]["wer"] == 50.0
    calls.clear()  # a third start loads the rebuilt cache
    params = base_model.train_base(experiment, "base", params_of(0.0))
    assert calls == [] and float(params["w"][0]) == 1.0


def test_a_damaged_finished_stage_is_trained_again(tmp_path, caplog):
    experiment = types.SimpleNamespace(workdir=tmp_path, partitioner=PARTITIONER)
    trained = []

    @common.kept_in_workdir
    def train(experiment, name, start):
        trained.append(name)
        return params_of(2.0)

    train(experiment, "sft", params_of(0.0))
    cut_short(tmp_path / "sft" / "params")
    with caplog.at_level(logging.WARNING):
        params = train(experiment, "sft", params_of(0.0))
    assert trained == ["sft", "sft"] and float(params["w"][0]) == 2.0
    assert str(tmp_path / "sft" / "params") in caplog.text
    assert float(train(experiment, "sft", params_of(0.0))["w"][0]) == 2.0  # loaded now
    assert trained == ["sft", "sft"]


def test_a_damaged_base_tokenizer_is_trained_again(tmp_path, small_sqa, caplog):
    rows, _ = small_sqa
    first = base.base_tokenizer(tmp_path, rows["train"], vocab_size=400)
    saved = (tmp_path / "tokenizer" / "tokenizer.json").read_text()
    cut_short(tmp_path / "tokenizer")
    with caplog.at_level(logging.WARNING):
        again = base.base_tokenizer(tmp_path, rows["train"], vocab_size=400)
    assert str(tmp_path / "tokenizer") in caplog.text
    assert (tmp_path / "tokenizer" / "tokenizer.json").read_text() == saved
    assert again.get_vocab() == first.get_vocab()


def test_a_skip_record_cut_short_is_repaired_before_the_next(tmp_path, caplog):
    path = tmp_path / "skipped.jsonl"
    whole = json.dumps({"id": "q1", "source": "a.wav", "reason": "missing audio file",
                        "detail": "gone"})
    path.write_text(whole + "\n" + whole.replace("q1", "q2")[:30])  # killed mid-line
    with caplog.at_level(logging.WARNING):
        SkipLog("skip", path).handle("q3", "c.wav", "missing audio file", "gone")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1", "q3"]
    assert str(path) in caplog.text


def test_results_cut_short_are_made_again(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text('{"sft": {"test": {"bleu": 1')
    monkeypatch.setattr(grpo_vs_sft, "run_experiment", lambda cfg, workdir: {"sft": "again"})
    assert grpo_vs_sft.finished_or_run(None, tmp_path) == {"sft": "again"}


def test_a_last_line_whole_but_for_its_newline_is_kept(tmp_path):
    path = tmp_path / "skipped.jsonl"
    whole = json.dumps({"id": "q1", "source": "a.wav", "reason": "r", "detail": "d"})
    path.write_text(whole)  # killed between the record and its newline
    SkipLog("skip", path).handle("q2", "b.wav", "r", "d")
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["q1", "q2"]
