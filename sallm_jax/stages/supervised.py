"""The supervised stages on the task, `warmup` (a short SFT before the two arms) and `sft` (the
SFT arm): cross-entropy on the answer tokens; their sections' defaults and checks."""

from __future__ import annotations

import ml_collections
from flax import nnx

from sallm_jax.runtime.user_errors import require
from sallm_jax.stages.checks import optimiser_numbers, positive_ints, validation
from sallm_jax.stages.common import kept_in_workdir, stage_inputs
from sallm_jax.train.sft import run_sft

SFT_KEYS = ("steps", "batch_size", "max_target_tokens", "checkpoint_every", "log_every")


def sft_section(**settings) -> ml_collections.ConfigDict:
    """Settings of a supervised stage (cross-entropy on the target tokens), `settings` changed."""
    c = ml_collections.ConfigDict({
        "steps": 100, "batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 10,
        "weight_decay": 0.01, "max_grad_norm": 1.0, "max_target_tokens": 12,
        "checkpoint_every": 50, "log_every": 25,
        # > 0 adds this times a CTC loss of the audio embeddings, read through the LM head,
        # against the target tokens (transcription targets: the base stage).
        "ctc_weight": 0.0,
        # Score on the validation split every eval_every steps (0: never) and keep the best
        # parameters by select_on (a stage on the task), the starting ones included.
        "eval_every": 0,
        # Start from the final parameters of the stage `start` names; from the initial
        # parameters (the new model, model.checkpoint or init_params) when it is "init"; or,
        # when it is "", from the previous training stage's (the first from the initial ones).
        "start": "",
    })
    c.update(settings)
    return c


def warmup_section() -> ml_collections.ConfigDict:
    """The warm start: a short SFT on the task from the base model."""
    return sft_section(steps=200, batch_size=32, learning_rate=2e-3, warmup_steps=20,
                       start="base", select_on="bleu")


def sft_arm_section() -> ml_collections.ConfigDict:
    """The SFT arm: as many examples as the GRPO arm's prompts, from the warm start, selected on
    validation; its learning rate is `commands.grpo_vs_sft`'s choice from {0.5, 1, 2} x 5e-4."""
    return sft_section(steps=100, batch_size=16, learning_rate=1e-3, warmup_steps=5,
                       start="warmup", eval_every=25, select_on="bleu")


def check_sft_keys(section: ml_collections.ConfigDict, name: str) -> None:
    """The keys `sft_section` gives section `name`."""
    positive_ints(section, name, SFT_KEYS)
    require(isinstance(section.eval_every, int) and section.eval_every >= 0,
            f"{name}.eval_every", "an integer >= 0", section.eval_every)
    optimiser_numbers(section, name)
    require(section.ctc_weight >= 0, f"{name}.ctc_weight", "a value >= 0", section.ctc_weight)


def check_supervised(cfg: ml_collections.ConfigDict, name: str) -> None:
    """The keys of supervised section `cfg[name]` on the task, its selection key included."""
    check_sft_keys(cfg[name], name)
    validation(cfg[name], name)


@kept_in_workdir
def train_supervised(experiment, name: str, start: nnx.State) -> nnx.State:
    """Stage `name` trained by supervision on the task's training split."""
    section = experiment.cfg[name]
    return run_sft(section, params=start, name=name,
                   **stage_inputs(experiment, name, section.max_target_tokens))
