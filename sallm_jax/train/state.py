"""Train state (step, parameters, optimiser state) and the AdamW optimiser built from config."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sallm_jax.parallel.partitioner import Partitioner


class TrainState(NamedTuple):
    """Everything an update changes; a pytree Orbax saves as is. `extras`: what a stage's updates
    carry beside the optimiser (GRPO's entropy controller, `rl.entropy_control`); {} when none."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    extras: dict[str, Any] = {}  # noqa: RUF012 (never mutated: a NamedTuple's default)


def learning_rate_schedule(learning_rate: float, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps` updates (the first update's rate is 0), then cosine
    decay to 10% at `total_steps`; with `warmup_steps=0` the first update has the full rate."""
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(learning_rate, decay_steps=max(total_steps, 1),
                                           alpha=0.1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=0.1 * learning_rate)


def make_optimizer(*, learning_rate: float, warmup_steps: int, total_steps: int,
                   weight_decay: float, max_grad_norm: float, b1: float = 0.9,
                   b2: float = 0.999) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on `learning_rate_schedule`."""
    schedule = learning_rate_schedule(learning_rate, warmup_steps, total_steps)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))


def create_train_state(params: nnx.State, tx: optax.GradientTransformation,
                       extras: dict[str, Any] | None = None) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      extras=extras or {})


def sharded_train_state(partitioner: Partitioner, params: nnx.State,
                        tx: optax.GradientTransformation, *, copy: bool = False,
                        extras: dict[str, Any] | None = None) -> tuple[TrainState, TrainState]:
    """(state, its shardings) on `partitioner`'s mesh: moments sharded like their parameters,
    `extras` replicated except an entry with the parameters' tree structure (GRPO's moving
    reference), sharded like them as a copy. `copy`: fresh parameter buffers (donating them keeps
    `params`)."""
    params = partitioner.shard_params(params, copy=copy)
    param_shardings = partitioner.param_shardings(params)
    extras = dict(extras or {})
    like_params = {k for k, v in extras.items()
                   if jax.tree.structure(v) == jax.tree.structure(params)}
    extras = {k: partitioner.shard_params(v, copy=True) if k in like_params else v
              for k, v in extras.items()}
    init = lambda p, e: create_train_state(p, tx, e)  # noqa: E731
    abstract = jax.eval_shape(init, params, extras)
    moments = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_shardings,
                                    transform_non_params=lambda _: partitioner.replicated)
    shardings = TrainState(step=partitioner.replicated, params=param_shardings,
                           opt_state=moments,
                           extras={k: param_shardings if k in like_params else jax.tree.map(
                               lambda _: partitioner.replicated, v)
                               for k, v in abstract.extras.items()})
    return jax.jit(init, out_shardings=shardings)(params, extras), shardings


def apply_gradients(state: TrainState, grads: nnx.State, tx: optax.GradientTransformation,
                    loss: jax.Array) -> tuple[TrainState, jax.Array]:
    """(next state, finite); a non-finite loss or gradient keeps params and opt_state (step + 1)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    return state._replace(step=state.step + 1,
                          params=keep(optax.apply_updates(state.params, updates), state.params),
                          opt_state=keep(opt_state, state.opt_state)), finite
