"""The batch pipeline: shapes and padding, bucketing, determinism, sharding, exact resume."""

import numpy as np
import pytest

from sallm_jax.audio.io import load_audio
from sallm_jax.audio.log_mel import num_feature_frames
from sallm_jax.data.pipeline import (
    BatchSpec,
    evaluation_batches,
    plan_training,
    screen_rows,
    training_dataset,
)
from sallm_jax.models.qwen2_audio.config import audio_token_count
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

SPEC = BatchSpec(batch_size=4, audio_buckets_s=(3.0, 5.0), max_prompt_text_tokens=48,
                 max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)


def test_batch_contents_match_rows(small_sqa):
    rows, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    batch = next(iter(training_dataset(rows["train"], chat, SPEC, num_batches=1, seed=0)))
    audio_id = tok.convert_tokens_to_ids("<|AUDIO|>")
    for slot, index in enumerate(batch["index"]):
        row = rows["train"][index]
        wave = load_audio(row.audio)
        n = len(wave)
        assert batch["num_samples"][slot] == n
        np.testing.assert_array_equal(batch["waveforms"][slot, :n], wave)
        assert not batch["waveforms"][slot, n:].any()
        ids, mask = batch["prompt_ids"][slot], batch["prompt_mask"][slot]
        # Left padding: the mask is a run of zeros, then ones to the end.
        assert mask[-1] == 1 and (np.diff(mask) >= 0).all()
        assert (ids == audio_id).sum() == audio_token_count(num_feature_frames(n))
        assert row.question in tok.decode(ids[mask == 1])
        target = batch["target_ids"][slot][batch["target_mask"][slot] == 1]
        assert target[-1] == tok.eos_token_id
        assert tok.decode(target[:-1]) == row.answer


def test_buckets_hold_clip_plus_padding(small_sqa):
    rows, _ = small_sqa
    buckets = screen_rows(rows["train"], SPEC)
    for row, b in zip(rows["train"], buckets, strict=True):
        n = len(load_audio(row.audio))
        assert n + 200 <= SPEC.bucket_samples(b)
        assert b == 0 or n + 200 > SPEC.bucket_samples(b - 1)
    tight = BatchSpec(4, (1.0,), 48, 16, QWEN2_AUDIO_TOKENS)
    with pytest.raises(ValueError, match="audio_buckets_s"):
        screen_rows(rows["train"], tight)


def test_plan_is_seeded_and_shards_disjoint():
    buckets = np.array([0] * 20 + [1] * 13)
    a = plan_training(buckets, 4, 30, seed=5)
    b = plan_training(buckets, 4, 30, seed=5)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, plan_training(buckets, 4, 30, seed=6),
                                               strict=True))
    for batch in a:
        assert len(set(buckets[batch])) == 1 and len(batch) == 4
    # Two processes, 4 rows each: one epoch is 2 + 1 global batches of 8. At every step both
    # hold rows of the same bucket; together they see 24 distinct rows, none twice.
    p0 = plan_training(buckets, 4, 3, seed=5, process_index=0, process_count=2)
    p1 = plan_training(buckets, 4, 3, seed=5, process_index=1, process_count=2)
    for x, y in zip(p0, p1, strict=True):
        assert len(x) == len(y) == 4
        assert len(set(buckets[x]) | set(buckets[y])) == 1
    seen0, seen1 = set(np.concatenate(p0)), set(np.concatenate(p1))
    assert not seen0 & seen1 and len(seen0 | seen1) == 24


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterator_state_restores_exactly(small_sqa, num_workers):
    rows, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    ds = training_dataset(rows["train"], chat, SPEC, num_batches=8, seed=0,
                          num_workers=num_workers)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it)["index"] for _ in range(3)]
    resumed = iter(ds)
    resumed.set_state(state)
    got = [next(resumed)["index"] for _ in range(3)]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)


def test_worker_processes_load_the_same_batches_as_threads(small_sqa):
    rows, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    threads = list(training_dataset(rows["train"], chat, SPEC, num_batches=6, seed=3))
    workers = list(training_dataset(rows["train"], chat, SPEC, num_batches=6, seed=3,
                                    num_workers=2))
    assert len(threads) == len(workers) == 6
    for a, b in zip(threads, workers, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("process_count", [1, 3])
def test_evaluation_covers_every_row_once(small_sqa, process_count):
    rows, tok = small_sqa
    chat = qwen2_audio_chat(tok)
    per_process = [list(evaluation_batches(rows["test"], chat, SPEC, process_index=p,
                                           process_count=process_count))
                   for p in range(process_count)]
    assert len({len(batches) for batches in per_process}) == 1  # same number of steps
    seen = []
    for step in zip(*per_process, strict=True):
        assert len({b["waveforms"].shape for b in step}) == 1  # same shapes at each step
        for b in step:
            seen += list(b["index"][b["valid"]])
    assert sorted(seen) == list(range(len(rows["test"])))
