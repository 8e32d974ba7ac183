"""Filling one GRPO batch by dynamic sampling (`grpo.dynamic_sampling`; which groups:
`rl/dynamic_sampling.py`), the same global batch on every process."""

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
    """This process's part of a batch filled by dynamic sampling: (host batch, its rollout rows).

    Draws at most `max_draws` host batches (`draw`), rolls out each (`rng` folded with the draw's
    number; draw 0: `rng`), scores it, and keeps groups of `group_size` with a reward spread (per
    reward with `per_reward`: GDPO). The host batch carries `DRAWN_KEYS`: prompts drawn, shortfall,
    flat groups drawn, failures per name of `reward_names`, samples scored (over all processes).
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
    """A filled batch's logged stats: `prompts_drawn`, `dynamic_sampling/shortfall` and
    `frac_reward_zero_std/drawn` (drawn groups whose rewards are all equal)."""
    drawn = int(host[DRAWN_PROMPTS])
    return {"prompts_drawn": drawn, "dynamic_sampling/shortfall": int(host[SHORTFALL]),
            "frac_reward_zero_std/drawn": int(host[DRAWN_FLAT]) / drawn}


def drawn_failures(host: Host, names: list[str]) -> tuple[dict[str, int], int]:
    """(reward function -> drawn samples it failed on, all processes; samples scored): the reward
    watch's view, failures in the groups dropped as flat included."""
    return (dict(zip(names, np.asarray(host[DRAWN_FAILURES]).tolist(), strict=True)),
            int(host[DRAWN_SCORED]))
