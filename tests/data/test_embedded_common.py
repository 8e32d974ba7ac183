"""Helpers shared by the embedded sets: the split plan, the tokenizer corpus, the synthesis
progress."""

import logging

import pytest

from sallm_jax.data.embedded_common import Clip, embedded_corpus_texts, plan_splits
from sallm_jax.data.embedded_sqa import EMBEDDED_SQA
from sallm_jax.data.manifest import ManifestRow, read_manifest
from sallm_jax.data.speech_synth import Speaker


def test_corpus_texts_cover_every_task():
    passage = {"passage": "Maria took seven apples to the library on Tuesday."}
    rows = [
        ManifestRow("s0", "a.wav", "sqa", "Where did Maria take the apples?",
                    "Maria took the apples to the library.", meta=passage),
        ManifestRow("t0", "a.wav", "ast", "Translate the English speech into German.",
                    "Maria nahm am Dienstag sieben Äpfel in die Bibliothek mit.", meta=passage),
        ManifestRow("m0", "a.wav", "aqa", "Who took the apples?", "Maria",
                    choices=["Tom", "Maria", "Leo", "Nina"], answer_index=1, meta=passage),
    ]  # fmt: skip
    assert list(embedded_corpus_texts(rows)) == [
        "Maria took seven apples to the library on Tuesday.",  # once, though three rows share it
        "Where did Maria take the apples?",
        "Maria took the apples to the library.",
        "Translate the English speech into German.",
        "Maria nahm am Dienstag sieben Äpfel in die Bibliothek mit.",
        "Who took the apples?",
        "Maria",
        "Who took the apples? Please choose the answer from the following options: "
        "['Tom', 'Maria', 'Leo', 'Nina']. Output the final answer in <answer> </answer>.",
        "<answer>Maria</answer>",
    ]


def test_plan_splits_sizes_and_exhaustion():
    texts = [f"passage {i}" for i in range(6)]

    def draw(rng, remaining):
        return Clip(rng.choice(texts), Speaker()), None, 2  # two rows per passage

    plan = plan_splits(0, {"train": 3, "validation": 2, "test": 2}, draw)
    assert [len(plan[s]) for s in ("train", "validation", "test")] == [2, 1, 1]
    used = [clip.text for split in plan.values() for clip, _ in split]
    assert len(used) == len(set(used))
    with pytest.raises(ValueError, match="only 6 distinct passages"):
        plan_splits(0, {"train": 20, "validation": 2, "test": 2}, draw)


def test_synthesis_reports_its_progress_over_every_clip(tmp_path, caplog):
    """Without a terminal the build logs "[synth <set>] done/total": its first line at clip 1,
    its last at the number of wav files the manifests name."""
    caplog.set_level(logging.INFO)
    manifests = EMBEDDED_SQA.build(tmp_path / "sqa", seed=3, num_train=6, num_validation=2,
                                   num_test=2)
    clips = {row.audio for path in manifests.values() for row in read_manifest(path)}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[synth sqa]")]
    assert lines[0] == f"[synth sqa] 1/{len(clips)} ({1 / len(clips):.0%})"
    assert lines[-1].startswith(f"[synth sqa] {len(clips)}/{len(clips)} (100%), ")
