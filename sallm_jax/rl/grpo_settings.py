"""The `grpo` config section, typed and checked once (`GRPOSettings.from_section`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sallm_jax.rl.advantages import AdvantageSettings
from sallm_jax.rl.entropy_control import EntropyControlSettings
from sallm_jax.rl.loss_settings import LossSettings
from sallm_jax.rl.scoring import RewardSettings
from sallm_jax.rl.settings import check, finite, read_settings


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """A GRPO update's settings; the scalar fields are the `grpo` keys of their names."""

    loss: LossSettings = LossSettings()
    advantages: AdvantageSettings = AdvantageSettings()
    rewards: RewardSettings = RewardSettings()
    entropy_control: EntropyControlSettings = EntropyControlSettings()
    group_size: int = 8  # completions per prompt, ground-truth rows included
    num_off_policy: int = 0  # ground-truth rows per group (mixed-policy GRPO)
    temperature: float = 1.0  # of the sampler, and of the log-probs the loss reads
    micro_batch_size: int = 0  # prompts per gradient-accumulation micro-batch; 0: the batch
    mask_truncated_completions: bool = False

    def __post_init__(self):
        check(isinstance(self.group_size, int) and self.group_size >= 2, "group_size",
              "an integer >= 2 (advantages compare samples within a group)", self.group_size)
        check(isinstance(self.num_off_policy, int) and 0 <= self.num_off_policy < self.group_size,
              "num_off_policy", "an integer in [0, grpo.group_size)", self.num_off_policy)
        check(finite(self.temperature) and self.temperature > 0, "temperature",
              "a value > 0 (sampling)", self.temperature)
        check(isinstance(self.micro_batch_size, int) and self.micro_batch_size >= 0,
              "micro_batch_size", "an integer >= 0 (0: the whole batch)", self.micro_batch_size)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> GRPOSettings:
        """The settings in `section` (the `grpo` mapping); missing keys keep defaults."""
        return read_settings(
            cls, section, loss=LossSettings.from_section(section),
            advantages=read_settings(AdvantageSettings, section),
            rewards=read_settings(RewardSettings, section),
            entropy_control=read_settings(EntropyControlSettings, section))
