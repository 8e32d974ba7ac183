"""The embedded ASR corpus the base model trains on: transcripts of the task sets' kinds of
passage, none of them a passage any evaluation split may hold."""

import random

import pytest
import soundfile

from sallm_jax.data import embedded_asr
from sallm_jax.data.embedded_common import held_out
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.prompts import target_text, user_text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr") / "corpus"
    manifests = embedded_asr.EMBEDDED_ASR.build(root, seed=2, num_train=30, num_validation=4,
                                                num_test=4)
    return {split: read_manifest(path) for split, path in manifests.items()}


def test_rows_are_transcription_examples(corpus):
    for rows in corpus.values():
        for row in rows:
            assert row.task == "asr" and user_text(row) == embedded_asr.INSTRUCTION
            assert target_text(row) == row.answer == row.meta["passage"]
            assert soundfile.info(row.audio).duration < 5.0


def test_training_clips_are_never_evaluation_passages(corpus):
    assert not any(held_out(row.answer) for row in corpus["train"])
    assert all(held_out(row.answer) for split in ("validation", "test") for row in corpus[split])


def test_texts_and_voices_cover_every_task_kind():
    rng = random.Random(0)
    texts = [embedded_asr.sample_text(rng) for _ in range(400)]
    # Both sources: the translation set's "came back from" template exists only there.
    assert any("came back from" in t for t in texts)
    assert any("went to the" in t for t in texts)
    assert len(embedded_asr.CORPUS_SPEAKERS) == 10
