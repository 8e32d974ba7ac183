"""Layer stacks as one `lax.scan` over their stacked weights: XLA compiles one layer's program
instead of one copy per layer (the unrolled loop of a 40-layer decoder gives each program that
runs it, the prefill, every decode step, the log-prob pass and its gradient, forty bodies to
optimise; a 16-block conformer or a 32-layer Whisper encoder adds its own to every program that
encodes audio), with the same arithmetic.

`set_scan_layers(model, True)` turns it on for every decoder and audio encoder in `model`. The
parameters keep their per-layer layout (checkpoints, LoRA, sharding rules and Hub key maps are
unchanged); the stack is built inside the compiled program, the decoder's by `stack_layers`
once before a decode loop (`rl/rollout.py`), so that its steps read the stacked copy rather
than build it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.kv_cache import KVCache, SharedPrefix


def compiler_options() -> dict[str, str]:
    """XLA options for the programs that run the model (rollout, log-probs, the SFT step and
    the GRPO update).

    On the CPU, XLA computes a bfloat16 matmul in float32, and its while-loop invariant code
    motion converts each scanned weight stack to float32 once, before the loop, rather than one
    layer per iteration: every bfloat16 weight of the scanned layers then lives a second time at
    twice its bytes for the whole program. Without that pass the conversion stays inside the
    loop, one layer at a time (granite_speech_2b's widths with 8 decoder layers, 1.36 GB in
    bfloat16: the SFT step's peak resident memory fell from 7.27 to 6.25 GB; on the f32 tiny
    model the GRPO stage ran no slower). Accelerators compute in bfloat16, so there the
    programs keep every pass.
    """
    if jax.default_backend() == "cpu":
        return {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}
    return {}


class StackedLayers(NamedTuple):
    """One layer's structure and every layer's state, stacked on a leading axis."""

    graphdef: nnx.GraphDef
    state: nnx.State

    @property
    def num_layers(self) -> int:
        return jax.tree.leaves(self.state)[0].shape[0]


def stack_layers(layers: Sequence[nnx.Module], what: str = "decoder",
                 first: int = 0) -> StackedLayers:
    """Structurally equal layers stacked: layers first, first + 1, ... of the `what` stack (as
    the error names them)."""
    splits = [nnx.split(layer) for layer in layers]
    graphdef = splits[0][0]
    for index, (other, _) in enumerate(splits[1:], start=first + 1):
        if other != graphdef:
            raise ValueError(
                f"model.scan_layers: {what} layer {index} differs in structure from layer {first} "
                "(adapters on some layers only?); scan needs every layer alike, or set "
                "model.scan_layers = False"
            )
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(s for _, s in splits))
    return StackedLayers(graphdef, state)


def scan_stack(layers: StackedLayers, carry: Any, step: Callable, remat: bool = False) -> Any:
    """`carry = step(layer, carry, index)` for every layer in turn, as one `lax.scan` (index is
    the layer's int32 position); with `remat` each step's activations are recomputed in the
    backward pass."""

    def body(carry, slice_):
        state, index = slice_
        return step(nnx.merge(layers.graphdef, state), carry, index), None

    if remat:
        body = jax.checkpoint(body)
    indices = jnp.arange(layers.num_layers, dtype=jnp.int32)
    carry, _ = jax.lax.scan(body, carry, (layers.state, indices))
    return carry


def run_stack(layers: Sequence[nnx.Module], x: jax.Array, step: Callable, *, scan: bool,
              what: str, first: int = 0) -> jax.Array:
    """`x = step(layer, x)` for each of `layers` (layers first, first + 1, ... of the `what`
    stack): unrolled, or with `scan` as one `lax.scan` over them stacked here (an encoder's
    layers, which each program runs once)."""
    if scan and layers:
        stacked = stack_layers(layers, what, first)
        return scan_stack(stacked, x, lambda layer, x, _: step(layer, x))
    for layer in layers:
        x = step(layer, x)
    return x


def scan_layers(
    layers: StackedLayers,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: KVCache | None,
    cache_index: jax.Array | int,
    prefix: SharedPrefix | None,
    remat: bool,
) -> tuple[jax.Array, KVCache | None]:
    """Every layer in turn on x [batch, seq, hidden], as `qwen2.run_layers`'s loop: layer i
    reads and writes row i of `cache` and reads row i of `prefix`. With `remat` (and no cache)
    each layer's activations are recomputed in the backward pass, as `remat.remat_layer`."""

    def step(layer, carry, index):
        x, cache = carry
        return layer(x, cos, sin, mask, cache, index, cache_index, prefix)

    return scan_stack(layers, (x, cache), step, remat=remat and cache is None)


def set_scan_layers(model: nnx.Module, enabled: bool) -> nnx.Module:
    """Switch the layer scan on or off for every decoder and audio encoder (a module with
    `.scan_layers`)."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "scan_layers") and isinstance(module.scan_layers, bool):
            module.scan_layers = enabled
    return model
