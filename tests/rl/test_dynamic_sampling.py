"""Dynamic sampling's choices on hand-made draws: which groups carry a signal, which fill the
batch and in what order, the shortfall's slots out of the loss, and prompts of two buckets padded
to one shape without changing a log-prob."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.rl.dynamic_sampling import groups_with_signal, padded, pick_groups, take_groups
from sallm_jax.rl.policy import completion_logprobs
from sallm_jax.rl.rollout import Rollout
from tests.rl.test_rollout import CONFIG, PAD_ID, make_batch


def test_groups_with_signal_by_the_weighted_sum():
    # G = 3; groups: flat, spread, flat at another value, spread but no tokens (a skipped prompt)
    rewards = np.array([1, 1, 1, 0, 1, 0, .5, .5, .5, 0, 1, 1], np.float32)
    mask = np.ones((12, 2), np.int32)
    mask[9:] = 0
    kept = groups_with_signal(rewards, np.zeros((12, 1)), mask, 3, per_reward=False)
    assert kept.tolist() == [False, True, False, False]


def test_groups_with_signal_per_reward_ignores_what_does_not_apply():
    nan = np.nan
    # G = 2, F = 2. Group 0: the sums tie (1 + 0 = 0 + 1) but each reward differs -> kept under
    # GDPO, dropped under the sum. Group 1: reward 0 applies to one sample only and reward 1 is
    # flat -> dropped under GDPO, while the sums (3, 2) differ. Group 2: reward 0 differs.
    per_fn = np.array([[1, 0], [0, 1], [1, 2], [nan, 2], [0, 5], [1, 5]], np.float32)
    sums = np.nan_to_num(per_fn).sum(1)
    mask = np.ones((6, 1), np.int32)
    assert groups_with_signal(sums, per_fn, mask, 2, per_reward=True).tolist() == [
        True, False, True]
    assert groups_with_signal(sums, per_fn, mask, 2, per_reward=False).tolist() == [
        False, True, True]


def test_pick_groups_fills_in_draw_order_and_cuts_the_surplus():
    keep = [np.array([False, True, False, True]), np.array([True, False, False, False]),
            np.array([True, True, True, True])]
    picks, in_loss = pick_groups(keep, 4)
    assert picks.tolist() == [[0, 1], [0, 3], [1, 0], [2, 0]]
    assert in_loss.tolist() == [True] * 4


def test_pick_groups_makes_up_a_shortfall_with_dropped_groups_out_of_the_loss():
    keep = [np.array([False, True, False]), np.array([False, False, True])]
    picks, in_loss = pick_groups(keep, 3)
    assert picks.tolist() == [[0, 1], [1, 2], [0, 0]]
    assert in_loss.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="2 groups drawn for a batch of 3"):
        pick_groups([np.array([False, True])], 3)


def hand_host(b, length, width, first_index):
    rng = np.random.default_rng(first_index)
    return {"prompt_ids": rng.integers(5, 50, (b, length)).astype(np.int32),
            "prompt_mask": np.ones((b, length), np.int32),
            "waveforms": rng.normal(size=(b, width)).astype(np.float32),
            "num_samples": np.full(b, width - 10, np.int32),
            "target_ids": rng.integers(5, 50, (b, 3)).astype(np.int32),
            "target_mask": np.ones((b, 3), np.int32),
            "index": np.arange(first_index, first_index + b, dtype=np.int32),
            "valid": np.array([True] * (b - 1) + [False])}


def test_take_groups_pads_to_the_largest_picked_draw_and_marks_the_shortfall():
    pad = 0
    hosts = [hand_host(3, 4, 20, 100), hand_host(3, 6, 30, 200)]
    c = 5  # completion length; 2 sampled rows per prompt, 6 per draw
    rollouts = [Rollout(np.arange(d * 100, d * 100 + 6 * c).reshape(6, c),
                        np.ones((6, c), np.int32), np.arange(6) % 2 == d, None)
                for d in range(2)]
    picks = np.array([[1, 1], [0, 2], [0, 0]])
    host, out = take_groups(hosts, rollouts, picks, np.array([True, True, False]), pad)
    assert host["index"].tolist() == [201, 102, 100]
    # draw 1's slot 1 was valid; draw 0's slot 2 was a skipped prompt; slot 0 is out of the loss
    assert host["valid"].tolist() == [True, False, False]
    assert host["prompt_ids"].shape == (3, 6) and host["waveforms"].shape == (3, 30)
    np.testing.assert_array_equal(host["prompt_ids"][0], hosts[1]["prompt_ids"][1])
    np.testing.assert_array_equal(host["prompt_ids"][1], [pad, pad, *hosts[0]["prompt_ids"][2]])
    np.testing.assert_array_equal(host["prompt_mask"][1], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(host["waveforms"][1], [*hosts[0]["waveforms"][2], *[0] * 10])
    # rows 2..3 of draw 1, rows 4..5 and 0..1 of draw 0
    np.testing.assert_array_equal(out.ids[:, 0], [110, 115, 20, 25, 0, 5])
    assert out.truncated.tolist() == [False, True, True, False, True, False]
    assert out.logp is None
    # A process's share of the batch takes the shape of the whole batch's picks.
    host, _ = take_groups(hosts, rollouts, picks[1:], np.array([True, False]), pad,
                          shape_of=picks)
    assert host["prompt_ids"].shape == (2, 6) and host["waveforms"].shape == (2, 30)


def test_padding_to_a_larger_bucket_keeps_the_log_probs():
    """The filled batch's prompts may come from a smaller bucket than its shape: left-padded
    prompts and zero-padded clips give the trainer the sampler's log-probs."""
    model = Qwen2AudioLM(CONFIG, rngs=nnx.Rngs(0))
    host = {k: np.asarray(v) for k, v in make_batch().items()}
    wide = padded(host, host["prompt_ids"].shape[1] + 7, host["waveforms"].shape[1] + 2400,
                  PAD_ID)
    assert wide["prompt_ids"].shape == (2, 47) and wide["waveforms"].shape == (2, 6400)
    ids = np.random.default_rng(1).integers(10, 50, (4, 5)).astype(np.int32)
    mask = np.ones_like(ids)

    def logp(batch):
        return np.asarray(completion_logprobs(model, jax.tree.map(jnp.asarray, batch), ids,
                                              mask, group_size=2, temperature=1.0))

    np.testing.assert_allclose(logp(wide), logp(host), atol=2e-5)
