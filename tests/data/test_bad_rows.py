"""Row-level problems found anywhere go through the bad-input policy with a message naming the
manifest line or file and the field: empty answers, choices out of range, duplicate ids, a BOM,
audio that is a directory or too short for one audio token, prompts over their limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sallm_jax.audio.io import declared_frames
from sallm_jax.data.bad_input import BadInputError, SkipLog
from sallm_jax.data.manifest import ManifestError, read_manifest
from sallm_jax.data.pipeline import BatchSpec, screen_rows
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

SPEC = BatchSpec(batch_size=2, audio_buckets_s=(3.25,), max_prompt_text_tokens=40,
                 max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)


def line(i, **fields):
    return json.dumps({"id": f"r{i}", "audio": "a.wav", "task": "sqa", "question": "Who?",
                       "answer": "Maria.", **fields})


def manifest(tmp_path, *lines, prefix=b""):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    path = tmp_path / "m.jsonl"
    path.write_bytes(prefix + "\n".join(lines).encode() + b"\n")
    return path


@pytest.mark.parametrize("bad, message", [
    (line(1, answer="  "), r"m\.jsonl:2: field 'answer': expected a non-empty string"),
    (line(1, task="aqa", choices=["a", "b"], answer_index=2),
     r"m\.jsonl:2: field 'answer_index': expected an index into the 2 choices, got 2"),
    (line(1, answer_index=0), r"field 'answer_index': expected an index into the 0 choices"),
    (line(0), r"m\.jsonl:2: field 'id': 'r0' is already the id of line 1"),
])
def test_bad_rows_name_line_and_field(tmp_path, bad, message):
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest(tmp_path, line(0), bad))


def test_skip_records_each_bad_row_even_when_ids_repeat(tmp_path):
    path = manifest(tmp_path, line(0), line(0), line(0, answer=""), line(1))
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    rows = read_manifest(path, skip_log=log)
    assert [r.id for r in rows] == ["r0", "r1"]
    records = [json.loads(x) for x in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert [r["source"].rsplit(":", 1)[1] for r in records] == ["2", "3"]
    assert "bad manifest line: 2" in log.summary()


def test_byte_order_mark_is_accepted(tmp_path):
    rows = read_manifest(manifest(tmp_path, line(0), line(1), prefix=b"\xef\xbb\xbf"))
    assert [r.id for r in rows] == ["r0", "r1"]


def test_same_id_different_sources_are_both_recorded(tmp_path):
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    log.handle("r0", "a.wav", "unreadable audio", "x")
    log.handle("r0", "b.wav", "unreadable audio", "y")
    log.handle("r0", "a.wav", "unreadable audio", "x")  # the same row met again: once
    assert len((tmp_path / "skipped.jsonl").read_text().splitlines()) == 2
    assert log.skipped("r0") and not log.skipped("r1")


def test_audio_that_is_a_directory_or_too_short(tmp_path, small_sqa):
    _, tokenizer = small_sqa
    (tmp_path / "folder.wav").mkdir()
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match=r"folder\.wav: cannot open"):
        declared_frames(tmp_path / "folder.wav")
    rows = read_manifest(manifest(tmp_path, line(0, audio="folder.wav"),
                                  line(1, audio="short.wav"),
                                  line(2, question="word " * 60), line(3)))
    with pytest.raises(BadInputError, match=r"folder\.wav: audio is not a file"):
        screen_rows(rows, SPEC)
    log = SkipLog("skip")
    buckets = screen_rows(rows, SPEC, log, qwen2_audio_chat(tokenizer))
    assert buckets.tolist() == [-1, -1, -1, 0]
    assert log.counts == {"audio is not a file": 1, "audio too short": 1, "prompt too long": 1}
