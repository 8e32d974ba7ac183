"""The memory of a bfloat16 forward pass on the CPU, read from XLA's own buffer assignment of the
compiled program (nothing runs): with the model programs' `compiler_options`, the scanned decoder
holds its stacked weights once (bfloat16) and converts one layer at a time to float32; without
them XLA converts the whole stack before the loop, which is what made granite_speech_2b's SFT
step run out of memory on this machine. And the frozen weights a stage, its evaluation and the
reference share are one set of buffers (`Partitioner.shard_params` copies only when asked), and
moving layers into stacked storage holds one copy of a variable's stack at most."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from sallm_jax.models.layer_scan import compiler_options, set_scan_layers
from sallm_jax.models.lora import LoRAParam, apply_lora
from sallm_jax.models.presets import get_preset
from sallm_jax.models.remat import set_remat
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.rl.policy import completion_logprobs, merge_policy

LAYERS = 6


def small_granite(lora_rank: int = 0):
    """granite_speech_2b's decoder at a quarter of its width, LAYERS layers, bfloat16,
    scanned, with LoRA adapters of `lora_rank` (0: none); built abstractly."""
    preset = get_preset("granite_speech_2b")
    text = dataclasses.replace(preset.text, hidden_size=512, intermediate_size=2048,
                               num_hidden_layers=LAYERS, vocab_size=4096)
    config = dataclasses.replace(preset, text=text, audio_token_id=4000)

    def build():
        model = GraniteSpeechLM(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                param_dtype=jnp.bfloat16)
        if lora_rank:
            apply_lora(model, rank=lora_rank, alpha=2 * lora_rank, rngs=nnx.Rngs(1))
        return set_scan_layers(model, True)

    return nnx.eval_shape(build)


def forward_temp_bytes(model, options: dict) -> int:
    """XLA's temporary bytes for the prefill of one 128-token text prompt."""
    graphdef, state = nnx.split(model)
    batch = {"prompt_ids": jax.ShapeDtypeStruct((1, 128), jnp.int32),
             "prompt_mask": jax.ShapeDtypeStruct((1, 128), jnp.int32)}

    def prefill(state, batch):
        return nnx.merge(graphdef, state).prefill(batch)[0]

    compiled = jax.jit(prefill, compiler_options=options).lower(state, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def decoder_layer_bytes(model) -> int:
    layers = nnx.state(model.language_model.layers)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(layers))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's conversion")
def test_the_scanned_decoder_converts_one_layer_at_a_time():
    model = small_granite()
    stacked = decoder_layer_bytes(model)  # the layers' bytes, stored stacked
    one_layer_f32 = 2 * stacked // LAYERS
    with_options = forward_temp_bytes(model, compiler_options())
    # No copy of the stack: one layer in float32 (and its neighbour's, double-buffered).
    assert with_options < 2 * one_layer_f32 + (64 << 20), (with_options, stacked)
    # The hazard the options remove: the whole stack converted to float32 before the loop
    # (twice the stack's bytes, part of which the bfloat16 stack's space then holds).
    without = forward_temp_bytes(model, {})
    assert without - with_options > stacked, (without, with_options, stacked)


def test_shard_params_shares_laid_out_weights_and_copies_when_asked():
    partitioner = Partitioner(make_mesh({"data": -1}), ())
    state = nnx.state(nnx.Linear(64, 64, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
    placed = partitioner.shard_params(state)
    again = partitioner.shard_params(placed)
    copied = partitioner.shard_params(placed, copy=True)
    pointer = lambda s: s["kernel"][...].unsafe_buffer_pointer()  # noqa: E731
    assert pointer(again) == pointer(placed)
    assert pointer(copied) != pointer(placed)
    assert (copied["kernel"][...] == placed["kernel"][...]).all()


MOVE = """
import resource, jax, jax.numpy as jnp
from flax import nnx
from sallm_jax.models.layer_scan import store_stacked

class Layer(nnx.Module):
    def __init__(self, index):
        self.kernel = nnx.Param(jnp.full((8192, 2048), index, jnp.bfloat16))  # 32 MiB

layers = [Layer(i) for i in range(16)]
jax.block_until_ready([layer.kernel[...] for layer in layers])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stack = store_stacked(layers)
assert int(stack[5].kernel[0, 0]) == 5
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's conversion")
def test_moving_layers_into_their_stack_holds_one_copy_at_most():
    """The move to stacked storage grows the process by at most the stack it fills (0.5 GiB
    here); a bfloat16 concatenation on the CPU would take about five times that."""
    result = subprocess.run([sys.executable, "-c", MOVE], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True)
    grown, stack_bytes = int(result.stdout.split()[-1]), 16 * 8192 * 2048 * 2
    assert grown < 1.2 * stack_bytes, (grown, stack_bytes)


def gradient_temp_bytes(remat: bool) -> int:
    """XLA's temporary bytes for the adapters' gradient of a 128-token text prompt's
    continuation (4 tokens), the prompt's pass included (`completion_logprobs`)."""
    model = set_remat(small_granite(lora_rank=4), remat)
    graphdef, adapters, frozen = nnx.split(model, LoRAParam, ...)
    batch = {"prompt_ids": jax.ShapeDtypeStruct((1, 128), jnp.int32),
             "prompt_mask": jax.ShapeDtypeStruct((1, 128), jnp.int32)}
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)

    def loss(adapters, frozen, batch, ids):
        model = merge_policy(graphdef, adapters, frozen)
        return completion_logprobs(model, batch, ids, jnp.ones_like(ids)).sum()

    compiled = jax.jit(jax.grad(loss), compiler_options=compiler_options()).lower(
        adapters, frozen, batch, ids).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU buffer assignment")
def test_remat_recomputes_the_prompt_pass_of_a_gradient():
    """With remat the prompt's pass, which writes the keys and values its continuation reads,
    keeps no layer's activations for the backward pass: at least the float32 attention
    probabilities of every layer but one (128 x 128 per head) fewer bytes."""
    heads = get_preset("granite_speech_2b").text.num_attention_heads
    probabilities = heads * 128 * 128 * 4
    saved = gradient_temp_bytes(False) - gradient_temp_bytes(True)
    assert saved > (LAYERS - 1) * probabilities, (saved, probabilities)
