"""Each kind of bad input: under "error" a message naming the file, line or field; under "skip"
a record with its reason, and the good examples still flow."""

import json

import numpy as np
import pytest
import soundfile as sf

from sallm_jax.data.bad_input import BadInputError, SkipLog
from sallm_jax.data.manifest import ManifestError, read_manifest
from sallm_jax.data.pipeline import BatchSpec, training_dataset
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

SPEC = BatchSpec(batch_size=2, audio_buckets_s=(3.25, 5.0), max_prompt_text_tokens=40,
                 max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)


def row(i, audio):
    return {"id": f"r{i}", "audio": audio, "task": "sqa", "question": "Who went there?",
            "answer": "Maria went there."}


@pytest.fixture
def bad_set(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("good0", "good1", "good2", "good3"):
        sf.write(tmp_path / f"{name}.wav", rng.normal(0, 0.1, 24000).astype(np.float32), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = rng.normal(0, 0.1, 16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "cut.wav", rng.normal(0, 0.1, 32000).astype(np.float32), 16000)
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])  # header still says 2 s
    (tmp_path / "noise.wav").write_bytes(b"RIFF not really audio")
    audio_rows = [row(0, "good0.wav"), row(1, "missing.wav"), row(2, "empty.wav"),
                  row(3, "nan.wav"), row(4, "good1.wav"), row(5, "cut.wav"),
                  row(6, "noise.wav"), row(7, "good2.wav"), row(8, "good3.wav")]
    lines = [json.dumps(r).encode() for r in audio_rows]
    lines += [b'{"id": "x", "audio": "good0.wav", ', b'{"id": "y", "audio": "good0.wav"}',
              b'{"id": "z\xff", "audio": "good0.wav", "task": "sqa", "question": "q", '
              b'"answer": "a"}',
              json.dumps({**row(9, "good0.wav"), "duration": "long"}).encode()]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("line, message", [
    (10, "invalid JSON"), (11, "field 'task': expected a string, got no such field"),
    (12, "not UTF-8"), (13, "field 'duration': expected a non-negative number"),
])
def test_manifest_errors_name_line_and_field(bad_set, line, message):
    lines = bad_set.read_bytes().split(b"\n")
    one_bad = bad_set.with_name("one.jsonl")
    one_bad.write_bytes(b"\n".join(lines[:9] + [lines[line - 1]]) + b"\n")
    with pytest.raises(ManifestError, match=rf"one\.jsonl:10: .*{message}"):
        read_manifest(one_bad)


@pytest.mark.parametrize("audio, reason", [
    ("missing.wav", "missing audio file"), ("empty.wav", "empty audio"),
    ("nan.wav", "NaN"), ("cut.wav", "truncated audio"), ("noise.wav", "unreadable audio"),
])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_audio_errors_name_the_file(bad_set, small_sqa, audio, reason, num_workers):
    _, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    rows = [r for r in read_manifest(bad_set, SkipLog("skip"))
            if r.audio.endswith(("good0.wav", "good1.wav", audio))]
    with pytest.raises(BadInputError, match=rf"{audio}: .*{reason}.*example 'r\d'"):
        for _ in training_dataset(rows, chat, SPEC, num_batches=6, seed=0,
                                  num_workers=num_workers):
            pass


def test_long_audio_is_truncated_when_configured(bad_set, small_sqa):
    _, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    rows = [r for r in read_manifest(bad_set, SkipLog("skip")) if r.id in ("r0", "r4")]
    short = BatchSpec(batch_size=2, audio_buckets_s=(1.0,), max_prompt_text_tokens=40,
                      max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS,
                      truncate_long_audio=True)
    batch = next(iter(training_dataset(rows, chat, short, num_batches=1, seed=0)))
    assert batch["valid"].all()
    np.testing.assert_array_equal(batch["num_samples"], [16000 - 200] * 2)  # 1.5 s cut to fit
    with pytest.raises(BadInputError, match="audio too long"):
        training_dataset(rows, chat, BatchSpec(2, (1.0,), 40, 16, QWEN2_AUDIO_TOKENS),
                         num_batches=1, seed=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_policy_records_every_bad_example(bad_set, small_sqa, tmp_path, num_workers):
    _, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    log = SkipLog("skip", tmp_path / "work" / "skipped.jsonl")
    rows = read_manifest(bad_set, log)
    assert [r.id for r in rows] == [f"r{i}" for i in range(9)]
    seen = set()
    for batch in training_dataset(rows, chat, SPEC, num_batches=6, seed=0, skip_log=log,
                                  num_workers=num_workers):
        seen |= {rows[i].id for i in batch["index"][batch["valid"]]}
    assert seen == {"r0", "r4", "r7", "r8"}
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    reasons = {r["id"].replace(str(bad_set), "train"): r["reason"] for r in records}
    assert len(records) == len(reasons)  # each example recorded once
    assert reasons == {"train:10": "bad manifest line", "train:11": "bad manifest line",
                       "train:12": "bad manifest line", "train:13": "bad manifest line",
                       "r1": "missing audio file", "r2": "empty audio",
                       "r3": "unreadable audio", "r5": "truncated audio",
                       "r6": "unreadable audio"}
    assert log.counts["bad manifest line"] == 4
    assert log.summary().startswith("9 examples skipped (bad manifest line: 4, empty audio: 1")
