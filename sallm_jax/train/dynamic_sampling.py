"""Filling one GRPO batch by dynamic sampling (`grpo.dynamic_sampling`): draw batches of prompts,
roll out and score each, and stop once the groups with a reward spread fill the batch or
`grpo.dynamic_sampling_max_draws` draws are spent (the choice itself: `rl/dynamic_sampling.py`).

Every process draws its share of each global batch, as without dynamic sampling; the draws'
host batches, rollouts and rewards are gathered, so every process decides on the same global
rewards and the filled batch is the one a single process would fill (a process may train on
groups another process sampled). The filled batch's statistics travel with it as host arrays
(`DRAWN_KEYS`): the data iterator's position after the draws is the checkpoint's, and a
generation kept beside a checkpoint keeps them, so a resumed stage logs the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.dynamic_sampling import (
    DRAWN_FAILURES,
    DRAWN_FLAT,
    DRAWN_PROMPTS,
    DRAWN_SCORED,
    SHORTFALL,
    groups_with_signal,
    pick_groups,
    take_groups,
)
from sallm_jax.rl.rollout import Rollout
from sallm_jax.rl.scoring import ScoredGroups, frac_equal_reward_groups

Host = dict[str, np.ndarray]


def fill_batch(draw: Callable[[], Host], rollout: Callable[[Host, jax.Array], Rollout],
               score: Callable[[Rollout, Host], ScoredGroups], rng: jax.Array, *,
               max_draws: int, group_size: int, per_reward: bool, reward_names: Sequence[str],
               partitioner: Partitioner, pad_id: int) -> tuple[Host, Rollout]:
    """This process's part of a batch filled by dynamic sampling: (host batch, its sampled rows).

    `draw` returns the next host batch (B prompts of this process), `rollout` its sampled rows
    (`local_rollout`) under a key, `score` their `ScoredGroups`, at most `max_draws` times
    (grpo.dynamic_sampling_max_draws); groups of `group_size`, a group's signal read per
    reward function with `per_reward` (GDPO), failures counted per name of `reward_names`
    (grpo.reward_fns). Draw d is sampled with
    `rng` folded with d, except draw 0, which uses `rng` as a step without dynamic sampling
    does. The host batch carries the statistics (`DRAWN_KEYS`): prompts drawn and the shortfall
    over all processes, drawn groups whose rewards are all equal, and each reward function's
    failures over all drawn samples (with the number of samples scored).
    """
    local_size, processes = None, jax.process_count()
    hosts, rollouts, keep = [], [], []
    flat = scored = 0
    failures = np.zeros(len(reward_names), np.int64)
    for d in range(max_draws):
        host = draw()
        local_size = len(host["valid"])
        out = rollout(host, rng if d == 0 else jax.random.fold_in(rng, d))
        groups = score(out, host)
        hosts.append({k: partitioner.gather(v) for k, v in host.items()})
        rollouts.append(Rollout(*(None if x is None else partitioner.gather(x) for x in out)))
        rewards, per_fn = partitioner.gather(groups.rewards), partitioner.gather(groups.per_fn)
        keep.append(groups_with_signal(rewards, per_fn, partitioner.gather(groups.mask),
                                       group_size, per_reward))
        flat += round(frac_equal_reward_groups(rewards, group_size) * len(keep[-1]))
        failures += partitioner.gather(np.array([[groups.failures.get(n, 0)
                                                  for n in reward_names]])).sum(0)
        scored += len(rewards)
        if sum(k.sum() for k in keep) >= local_size * processes:
            break
    size = local_size * processes
    picks, in_loss = pick_groups(keep, size)
    mine = slice(jax.process_index() * local_size, (jax.process_index() + 1) * local_size)
    host, out = take_groups(hosts, rollouts, picks[mine], in_loss[mine], pad_id, shape_of=picks)
    host.update({DRAWN_PROMPTS: np.array(len(keep) * size),
                 SHORTFALL: np.array(size - int(in_loss.sum())),
                 DRAWN_FLAT: np.array(flat), DRAWN_FAILURES: failures,
                 DRAWN_SCORED: np.array(scored)})
    return host, out


def drawn_scalars(host: Host) -> dict[str, float]:
    """The logged statistics of a filled batch: `prompts_drawn` (every process's),
    `dynamic_sampling/shortfall` (prompts the kept groups did not fill) and
    `frac_reward_zero_std/drawn` (the drawn groups whose rewards are all equal: what
    `frac_reward_zero_std` would have been without dynamic sampling)."""
    drawn = int(host[DRAWN_PROMPTS])
    return {"prompts_drawn": drawn, "dynamic_sampling/shortfall": int(host[SHORTFALL]),
            "frac_reward_zero_std/drawn": int(host[DRAWN_FLAT]) / drawn}


def drawn_failures(host: Host, names: list[str]) -> tuple[dict[str, int], int]:
    """(per reward function, the drawn samples it failed on over all processes; the samples
    scored): what the reward watch reads, so a reward that fails on every sample (and thereby
    leaves every group flat and dropped) is still seen."""
    return (dict(zip(names, np.asarray(host[DRAWN_FAILURES]).tolist(), strict=True)),
            int(host[DRAWN_SCORED]))
