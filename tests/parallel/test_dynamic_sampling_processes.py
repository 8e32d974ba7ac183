"""Dynamic sampling over two processes (127.0.0.1, gloo): the processes decide on the same
gathered rewards, so the two-process run draws, keeps and trains like the one-process run:
the same prompts drawn, shortfall, rewards and losses at every step."""

import json

import pytest

from tests.parallel.test_multiprocess import ARGS, launch, metrics
from tests.train.test_dynamic_sampling_stage import is_flat

pytestmark = pytest.mark.slow
DYNAMIC = ["--config.grpo.dynamic_sampling=True", "--config.grpo.dynamic_sampling_max_draws=3",
           "--config.grpo.log_completions_every=1",
           "--config.grpo.reward_fns=('tests.parallel.test_dynamic_sampling_processes:"
           "flat_on_some_prompts',)"]
RUN_ARGS = [a for a in ARGS if not a.startswith("--config.grpo.reward_fns")] + DYNAMIC


def flat_on_some_prompts(completion: str, example: dict) -> float:
    """0.5 on the `is_flat` prompts, chrF against the answer elsewhere."""
    from sallm_jax.rl.rewards import REWARD_FNS

    return 0.5 if is_flat(example["id"]) else REWARD_FNS["chrf"](completion, example)


def test_two_processes_draw_and_keep_like_one(tmp_path, smoke_cache):
    one, two = tmp_path / "one", tmp_path / "two"
    launch(one, smoke_cache, 1, RUN_ARGS)
    launch(two, smoke_cache, 2, RUN_ARGS)
    a, b = metrics(one, "grpo"), metrics(two, "grpo")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    # Some step drew more than one batch: flat groups were replaced.
    assert any(r["prompts_drawn"] > 2 for r in a)
    for ra, rb in zip(a, b, strict=True):
        for k in ("prompts_drawn", "dynamic_sampling/shortfall", "frac_reward_zero_std/drawn"):
            assert rb[k] == ra[k], (ra["step"], k)
        for k in ("loss", "reward_mean"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["step"], k)
    # The kept prompts of the one-process run: none of them flat.
    tables = [json.loads(line) for line in (one / "grpo" / "completions.jsonl").open()]
    assert all(not is_flat(g["id"]) for t in tables for g in t["groups"])
