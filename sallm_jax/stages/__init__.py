"""The stages a config's `stages` can list, each registered here once: runner, section defaults (the
section is named after the stage) and checks; `run_experiment` walks them through `STAGES`.

A new stage is one file and one `register_stage` line: a runner calling `train.loop.TrainingLoop`
with its own `StageSteps` (`kept_in_workdir` saves and reuses its parameters, `stage_inputs` gives
what a stage on the training split needs), its section's defaults, and its checks.
"""

from sallm_jax.stages import base_model, evaluation, grpo, grpo_section, supervised
from sallm_jax.stages.registry import (
    STAGES,
    Stage,
    register_stage,
    stage_sections,
    training_stages,
)

__all__ = ["STAGES", "Stage", "register_stage", "stage_sections", "training_stages"]

register_stage("base", base_model.train_base, defaults=base_model.base_section,
               check=base_model.check_base)
register_stage("warmup", supervised.train_supervised, defaults=supervised.warmup_section,
               check=supervised.check_supervised)
register_stage("sft", supervised.train_supervised, defaults=supervised.sft_arm_section,
               check=supervised.check_supervised)
register_stage("grpo", grpo.train_grpo, defaults=grpo_section.grpo_section,
               check=grpo.check_grpo)
register_stage("eval", evaluation.evaluate_trained, defaults=evaluation.eval_section,
               check=evaluation.check_eval, trains=False)
