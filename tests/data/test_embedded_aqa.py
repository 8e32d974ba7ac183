"""The embedded multiple-choice audio QA set: choices, leakage, voices, determinism, hygiene."""

import collections
import hashlib
import random
import re

import numpy as np
import pytest

from sallm_jax.data import embedded_aqa
from sallm_jax.data.embedded_aqa import EMBEDDED_AQA, VOICES
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.prompts import target_text, user_text
from sallm_jax.data.speech_synth import synthesize

SIZES = {"num_train": 10, "num_validation": 3, "num_test": 4}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("aqa") / "embedded"
    return root, EMBEDDED_AQA.build(root, seed=3, **SIZES)


def _said(text: str, value: str) -> bool:
    return re.search(rf"\b{re.escape(value)}\b", text, re.IGNORECASE) is not None


def test_choices_over_many_items():
    rng = random.Random(0)
    positions = collections.Counter()
    kinds = collections.Counter()
    for _ in range(3000):
        passage, label, speaker, item = embedded_aqa.sample_item(rng)
        choices, answer = item.choices, item.choices[item.answer_index]
        assert len(choices) == 4 and len(set(choices)) == 4, item
        assert set(choices) <= set(embedded_aqa.VOCABULARY[item.kind]), item
        for choice in choices:  # the question names no option, right or wrong
            assert not _said(item.question, choice), item
        if item.kind == "voice":
            assert answer == label and speaker in VOICES[label], item
        else:  # the answer was said; no wrong option was
            assert _said(passage, answer), (passage, item)
            assert not any(_said(passage, c) for c in choices if c != answer), (passage, item)
        positions[item.answer_index] += 1
        kinds[item.kind] += 1
    # Shuffled: the right answer sits at each position about a quarter of the time.
    assert all(600 < positions[i] < 900 for i in range(4)), positions
    assert set(kinds) == {"name", "number", "object", "place", "day", "time", "voice"}


def _median_f0(waveform: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch (70..400 Hz) over the louder 46 ms frames."""
    estimates = []
    low, high = rate // 400, rate // 70
    for start in range(0, waveform.size - 1024, 512):
        frame = waveform[start : start + 1024]
        if np.sqrt(np.mean(frame**2)) < 0.02:
            continue
        ac = np.correlate(frame, frame, "full")[1023:]
        estimates.append(rate / (low + np.argmax(ac[low:high])))
    return float(np.median(estimates))


def test_voice_labels_match_pitch():
    text = "Maria took seven apples to the library on Tuesday."
    for label, speakers in VOICES.items():
        for speaker in speakers:
            f0 = _median_f0(*synthesize(text, speaker))
            if "woman" in label:
                assert f0 > 180, (label, speaker, f0)
            else:
                assert f0 < 130, (label, speaker, f0)


def test_rows_and_prompt(built):
    root, manifests = built
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    assert {s: len(r) for s, r in rows.items()} == {"train": 10, "validation": 3, "test": 4}
    for row in (r for split_rows in rows.values() for r in split_rows):
        assert row.task == "aqa" and row.meta["category"] == "speech"
        assert len(set(row.choices)) == 4 and row.answer == row.choices[row.answer_index]
        assert not _said(row.question, row.answer)
        assert user_text(row) == (
            f"{row.question} Please choose the answer from the following options: "
            f"{row.choices!r}. Output the final answer in <answer> </answer>."
        )
        assert target_text(row) == f"<answer>{row.answer}</answer>"


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_no_shared_passage(built, tmp_path):
    root, manifests = built
    EMBEDDED_AQA.build(tmp_path / "again", seed=3, **SIZES)
    assert _digest(tmp_path / "again") == _digest(root)
    EMBEDDED_AQA.build(tmp_path / "other", seed=4, **SIZES)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (root / "train.jsonl").read_bytes()
    passages = {s: {r.meta["passage"] for r in read_manifest(p)} for s, p in manifests.items()}
    assert not passages["train"] & passages["validation"]
    assert not passages["train"] & passages["test"]
    assert not passages["validation"] & passages["test"]
