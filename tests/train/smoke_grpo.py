"""The GRPO stage of the smoke preset on the small spoken-QA set, from one fixed
initialisation: the trained parameters and the metric records, timings left out."""

import json

import jax
import numpy as np
from flax import nnx

from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.run.experiment import batch_spec, model_config
from sallm_jax.train.grpo_stage import run_grpo
from tests.batch_spec import qwen2_audio_chat

TIMING = ("step_seconds", "tokens_per_s")


def run_smoke_grpo(cfg, workdir, small_sqa):
    """`run_grpo` on `cfg.grpo` and the `small_sqa` fixture's train rows, the reference the
    starting policy (as the stage without LoRA): (params as NumPy, metrics.jsonl records
    without their timings)."""
    rows, tok = small_sqa
    mcfg = model_config(cfg, tok)
    graphdef, params, frozen = nnx.split(Qwen2AudioLM(mcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    trained = run_grpo(cfg.grpo, graphdef=graphdef, params=params, frozen=frozen,
                       ref_params=params, rows=rows["train"], chat=qwen2_audio_chat(tok),
                       spec=batch_spec(cfg, mcfg, "grpo.batch_size",
                                       cfg.grpo.max_completion_length),
                       workdir=workdir, seed=0,
                       partitioner=Partitioner(make_mesh({"data": -1}), ()))
    records = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (workdir / "metrics.jsonl").open()]
    return jax.tree.map(np.asarray, trained), records
