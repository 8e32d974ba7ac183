"""Mixed-policy GRPO groups: references appended last in each group, flagged off-policy."""

import numpy as np

from sallm_jax.rl.mixed_policy import mix_in_references


def test_references_join_each_group():
    ids = np.arange(4 * 3).reshape(4, 3)  # B = 2 prompts x 2 samples, C = 3
    mask = np.ones_like(ids)
    truncated = np.array([True, False, False, True])
    target_ids = np.array([[100, 101, 0], [200, 0, 0]])
    target_mask = np.array([[1, 1, 0], [1, 0, 0]])
    out_ids, out_mask, out_trunc, off = mix_in_references(ids, mask, truncated, target_ids,
                                                          target_mask, num_off_policy=1)
    np.testing.assert_array_equal(out_ids, [[0, 1, 2], [3, 4, 5], [100, 101, 0],
                                            [6, 7, 8], [9, 10, 11], [200, 0, 0]])
    np.testing.assert_array_equal(out_mask[[2, 5]], target_mask)
    np.testing.assert_array_equal(out_trunc, [True, False, False, False, True, False])
    np.testing.assert_array_equal(off, [False, False, True, False, False, True])


def test_scored_groups_give_references_their_reward(small_sqa):
    import jax.numpy as jnp

    from sallm_jax.configs.sqa_grpo import get_config
    from sallm_jax.data.pipeline import BatchLoader, BatchSpec, screen_rows
    from sallm_jax.parallel.mesh import make_mesh
    from sallm_jax.parallel.partitioner import Partitioner
    from sallm_jax.rl.rollout import Rollout
    from sallm_jax.rl.scoring import RewardSettings, local_rollout, score_groups
    from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

    rows, tok = small_sqa

    chat = qwen2_audio_chat(tok)
    cfg = get_config("smoke").grpo
    cfg.group_size, cfg.num_off_policy = 3, 1
    spec = BatchSpec(2, (3.25, 5.0), 40, 16, QWEN2_AUDIO_TOKENS)
    buckets = screen_rows(rows["train"], spec)
    first = [i for i in range(len(buckets)) if buckets[i] == buckets[0]][:2]
    host_batch, skips = BatchLoader(rows["train"], buckets, chat, spec)(np.array(first))
    assert skips == ()
    junk = tok("zzz")["input_ids"] + [tok.eos_token_id]
    ids = np.zeros((4, 16), np.int32)
    ids[:, : len(junk)] = junk
    mask = (np.arange(16) < len(junk)).astype(np.int32)[None].repeat(4, 0)
    out = Rollout(jnp.asarray(ids), jnp.asarray(mask), jnp.zeros(4, bool))
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    groups = score_groups(local_rollout(out, partitioner), host_batch, rows["train"], tok,
                          RewardSettings(("bleu",)), group_size=cfg.group_size,
                          num_off_policy=cfg.num_off_policy)
    np.testing.assert_array_equal(groups.off_policy, [False, False, True] * 2)
    assert groups.texts[2] == rows["train"][first[0]].answer
    assert groups.texts[5] == rows["train"][first[1]].answer
    np.testing.assert_allclose(groups.rewards, [0, 0, 1, 0, 0, 1], atol=1e-6)
