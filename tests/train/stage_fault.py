"""A training stage that meets a fault, run in a process of its own by test_stage_faults:
`python -m tests.train.stage_fault DATA WORKDIR MEGABYTES BAD_STEP`.

The train state is MEGABYTES of random numbers (incompressible, so a small disk fills up), saved
every 2 steps over 6 steps; step BAD_STEP (0: none) meets a bad example, as the input pipeline
raises it under data.on_bad_input=error. The error leaves the process as it would leave main."""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from sallm_jax.data.bad_input import BadInputError
from sallm_jax.data.embedded_sqa import EMBEDDED_SQA, embedded_corpus_texts
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.pipeline import BatchSpec
from sallm_jax.data.tokenizer import train_tokenizer
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.loop import StageSteps, StepResult, TrainingLoop
from sallm_jax.train.state import apply_gradients
from tests.batch_spec import QWEN2_AUDIO_TOKENS, qwen2_audio_chat

BAD_EXAMPLE = "clip.wav: truncated audio: 100 of 16000 frames (example 'q3')"
TX = optax.sgd(0.1)


class Weights(nnx.Module):
    def __init__(self, megabytes: int):
        self.w = nnx.Param(jax.random.normal(jax.random.key(0), (megabytes, 256, 1024)))


class Steps(StageSteps):
    def __init__(self, bad_step: int):
        self.bad_step = bad_step

    def step(self, state, step):
        if step + 1 == self.bad_step:
            raise BadInputError(BAD_EXAMPLE)
        grads = jax.tree.map(jnp.ones_like, state.params)
        state, finite = apply_gradients(state, grads, TX, jnp.float32(1.0))
        return state, StepResult({"finite": finite}, {}, lambda seconds: {})


def main(data: pathlib.Path, workdir: pathlib.Path, megabytes: int, bad_step: int) -> None:
    rows = read_manifest(EMBEDDED_SQA.build(data, seed=1, num_train=8, num_validation=2,
                                            num_test=2)["train"])
    tokenizer = train_tokenizer(embedded_corpus_texts(rows), data / "tokenizer", vocab_size=400)
    spec = BatchSpec(batch_size=2, audio_buckets_s=(3.0, 5.0), max_prompt_text_tokens=48,
                     max_target_tokens=16, num_audio_tokens=QWEN2_AUDIO_TOKENS)
    cfg = ml_collections.ConfigDict({"steps": 6, "checkpoint_every": 2, "log_every": 2,
                                     "eval_every": 0})
    loop = TrainingLoop("toy", cfg, params=nnx.split(Weights(megabytes))[1], tx=TX, rows=rows,
                        chat=qwen2_audio_chat(tokenizer), spec=spec, workdir=workdir, seed=0,
                        partitioner=Partitioner(make_mesh({"data": -1}), ()))
    loop.run(Steps(bad_step))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]),
         int(sys.argv[4]))
