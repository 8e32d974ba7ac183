"""The embedded spoken QA set: determinism, split hygiene, answer leakage, audio, caching."""

import hashlib
import json
import random
import re

import pytest
import soundfile

from sallm_jax.data import embedded_common, embedded_sqa
from sallm_jax.data.embedded_sqa import EMBEDDED_SQA, embedded_corpus_texts
from sallm_jax.data.manifest import read_manifest

SIZES = {"num_train": 14, "num_validation": 5, "num_test": 6}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqa") / "embedded"
    return root, EMBEDDED_SQA.build(root, seed=3, **SIZES)


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sizes_and_fields(built):
    root, manifests = built
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    assert {split: len(r) for split, r in rows.items()} == {"train": 14, "validation": 5, "test": 6}
    for row in (row for split_rows in rows.values() for row in split_rows):
        assert row.task == "sqa" and row.audio.startswith(str(root))
        assert 1 <= len(row.answer.split()) <= 10
        assert row.meta["speaker"] and row.meta["passage"] and row.meta["passage_id"]
    ids = [row.id for split_rows in rows.values() for row in split_rows]
    assert len(ids) == len(set(ids))


def test_same_seed_same_bytes(built, tmp_path):
    root, _ = built
    again = tmp_path / "again"
    EMBEDDED_SQA.build(again, seed=3, **SIZES)
    assert _digest(again) == _digest(root)  # manifests and every wav, byte for byte
    other = tmp_path / "other"
    EMBEDDED_SQA.build(other, seed=4, **SIZES)
    assert (other / "train.jsonl").read_bytes() != (root / "train.jsonl").read_bytes()


def test_no_passage_shared_across_splits(built):
    _, manifests = built
    passages = {s: {r.meta["passage"] for r in read_manifest(p)} for s, p in manifests.items()}
    assert not passages["train"] & passages["validation"]
    assert not passages["train"] & passages["test"]
    assert not passages["validation"] & passages["test"]


def test_questions_do_not_leak_answers():
    # Many passages from the generator itself, not only the few in the small build; every
    # phrasing of every answer, not only the one a row draws.
    rng = random.Random(0)
    for _ in range(2000):
        passage = rng.choice(embedded_sqa.TEMPLATES)(rng)
        for qa in passage.questions:
            assert qa.key.lower() not in qa.question.lower(), qa
            assert qa.key.lower() in passage.text.lower(), qa
            assert len(set(qa.answers)) == 4, qa
            for answer in qa.answers:
                assert re.search(rf"\b{re.escape(qa.key)}\b", answer, re.IGNORECASE), (qa, answer)


def test_rows_draw_every_phrasing():
    """A row holds one phrasing, drawn at random: over many rows each question kind shows all four
    of its phrasings at about their configured rates (the reference is one of several right
    answers, most often the full sentence)."""
    rng = random.Random(1)
    counts: dict[tuple[str, int], int] = {}
    for _ in range(4000):
        passage = embedded_sqa.sample_passage(rng)
        assert 1 <= len(passage.questions) <= 3
        for qa in passage.questions:
            assert len(qa.answers) == 1
            counts[qa.kind, qa.phrasing] = counts.get((qa.kind, qa.phrasing), 0) + 1
    kinds = {"place", "number", "object", "name", "day", "time"}
    assert set(counts) == {(kind, i) for kind in kinds for i in range(4)}
    for kind in kinds:
        total = sum(counts[kind, i] for i in range(4))
        for i, weight in enumerate(embedded_sqa.PHRASING_WEIGHTS):
            assert abs(counts[kind, i] / total - weight) < 0.06, (kind, i, counts)


def test_evaluation_splits_come_from_the_held_out_pool(built):
    _, manifests = built
    for split, path in manifests.items():
        for row in read_manifest(path):
            assert embedded_common.held_out(row.meta["passage"]) == (split != "train"), row


def test_audio_files(built):
    _, manifests = built
    rows = read_manifest(manifests["train"])
    for audio in sorted({row.audio for row in rows}):
        info = soundfile.info(audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.0 < info.duration < 5.0


def test_cache_is_reused(built, monkeypatch):
    root, manifests = built
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("re-synthesised a cached build")

    monkeypatch.setattr(embedded_common, "synthesize", fail)
    assert EMBEDDED_SQA.build(root, seed=3, **SIZES) == manifests
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert json.loads((root / "build.json").read_text())["seed"] == 3


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded_common, "synthesize", _interrupting(embedded_common.synthesize, 3))
    with pytest.raises(KeyboardInterrupt):
        EMBEDDED_SQA.build(tmp_path / "sqa", seed=3, **SIZES)
    assert list(tmp_path.iterdir()) == []


def _interrupting(synthesize, after: int):
    """`synthesize` that raises KeyboardInterrupt on call number `after`, like a killed build."""
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == after:
            raise KeyboardInterrupt
        return synthesize(*args, **kwargs)

    return wrapped


def test_new_parameters_replace_the_cache(tmp_path):
    root = tmp_path / "sqa"
    EMBEDDED_SQA.build(root, seed=3, **SIZES)
    EMBEDDED_SQA.build(root, seed=5, **{**SIZES, "num_test": 2})
    assert json.loads((root / "build.json").read_text())["seed"] == 5
    assert len(read_manifest(root / "test.jsonl")) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["sqa"]  # no staging or stale folder left


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="no build.json"):
        EMBEDDED_SQA.build(tmp_path, **SIZES)


def test_corpus_texts(built):
    _, manifests = built
    rows = read_manifest(manifests["train"])
    texts = list(embedded_corpus_texts(rows))
    passages = {row.meta["passage"] for row in rows}
    assert set(texts) >= passages | {r.question for r in rows} | {r.answer for r in rows}
    assert sum(t in passages for t in texts) == len(passages)  # each passage once
