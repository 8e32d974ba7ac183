"""The GRPO loss's settings (`LossSettings`), read from the `grpo` section and checked once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from sallm_jax.rl.aggregation import AGGREGATIONS
from sallm_jax.rl.policy_terms import POLICY_TERMS, PolicyTerm
from sallm_jax.rl.rollout_correction import ROLLOUT_CORRECTIONS, rollout_correction_weights
from sallm_jax.rl.settings import check, finite, read_settings

IMPORTANCE_LEVELS = ("token", "sequence")  # `grpo.importance_sampling_level`
ROLLOUT_DTYPES = ("", "float32", "bfloat16")  # `grpo.rollout_dtype`; "": the trainer's


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """What `grpo_loss` does besides its arrays; fields but `term` are `grpo` keys.

    `term`: `POLICY_TERMS[loss_type].settings` (None: defaults); `entropy_coef` may be the adaptive
    controller's scalar array; a rollout-correction bound of 0 is none."""

    loss_type: str = "grpo"
    term: Any = None
    beta: float = 0.0
    loss_aggregation: str = "dapo"
    importance_sampling_level: str = "token"
    top_entropy_quantile: float = 1.0
    entropy_coef: float | jax.Array = 0.0
    off_policy_mask_threshold: float = 0.0
    use_bias_correction_kl: bool = False
    rollout_dtype: str = ""
    rollout_correction: str = ""
    rollout_correction_min: float = 0.0
    rollout_correction_max: float = 3.0

    def __post_init__(self):
        check(self.loss_type in POLICY_TERMS, "loss_type", f"one of {sorted(POLICY_TERMS)}",
              self.loss_type)
        if self.term is None:
            object.__setattr__(self, "term", self.policy_term.settings())
        check(isinstance(self.term, self.policy_term.settings), "loss_type",
              f"settings of type {self.policy_term.settings.__name__} for its term",
              self.loss_type)
        check(self.loss_aggregation in AGGREGATIONS, "loss_aggregation",
              f"one of {sorted(AGGREGATIONS)}", self.loss_aggregation)
        check(self.importance_sampling_level in IMPORTANCE_LEVELS, "importance_sampling_level",
              f"one of {IMPORTANCE_LEVELS}", self.importance_sampling_level)
        check(finite(self.beta) and self.beta >= 0, "beta", "a value >= 0", self.beta)
        check(finite(self.top_entropy_quantile) and 0 < self.top_entropy_quantile <= 1,
              "top_entropy_quantile",
              "a fraction in (0, 1] of the completion tokens kept (1.0: all)",
              self.top_entropy_quantile)
        check(isinstance(self.entropy_coef, jax.Array) or finite(self.entropy_coef),
              "entropy_coef", "a finite number", self.entropy_coef)
        check(finite(self.off_policy_mask_threshold) and self.off_policy_mask_threshold >= 0,
              "off_policy_mask_threshold", "0 (off) or a mean log-ratio > 0 (e.g. 0.5)",
              self.off_policy_mask_threshold)
        check(not self.use_bias_correction_kl or self.beta > 0, "use_bias_correction_kl",
              "False with grpo.beta = 0 (it weights the KL term, which is then off)",
              self.use_bias_correction_kl)
        self._check_rollout_correction()
        self._check_term_needs()

    def _check_rollout_correction(self) -> None:
        """grpo.rollout_dtype and grpo.rollout_correction with its bounds (0: none)."""
        check(self.rollout_dtype in ROLLOUT_DTYPES, "rollout_dtype",
              "'' (the trainer's compute dtype), float32 or bfloat16", self.rollout_dtype)
        check(self.rollout_correction in ("", *ROLLOUT_CORRECTIONS), "rollout_correction",
              f"'' (off) or one of {ROLLOUT_CORRECTIONS}", self.rollout_correction)
        low, high = self.rollout_correction_min, self.rollout_correction_max
        check(finite(low) and 0 <= low < 1, "rollout_correction_min",
              "0 (no lower bound) or a ratio in (0, 1)", low)
        check(finite(high) and (high == 0 or high > 1), "rollout_correction_max",
              "0 (no upper bound) or a ratio > 1 (TRL's 3.0)", high)

    def _check_term_needs(self) -> None:
        """The level and aggregation the term needs; a token correction for a term that folds it."""
        term, name = self.policy_term, repr(self.loss_type)
        check(term.level in (None, self.importance_sampling_level), "importance_sampling_level",
              f"{term.level!r} with grpo.loss_type={name}", self.importance_sampling_level)
        check(term.aggregation in (None, self.loss_aggregation), "loss_aggregation",
              f"{term.aggregation!r} with grpo.loss_type={name}", self.loss_aggregation)
        check(not term.folds_rollout_weights
              or self.rollout_correction in ("", "token_truncate", "token_mask"),
              "rollout_correction", f"'' or a token mode with grpo.loss_type={name} (its "
              "weights multiply the term's own weight)", self.rollout_correction)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> LossSettings:
        """The settings in `section` (the `grpo` mapping); missing keys keep defaults."""
        term = POLICY_TERMS.get(section.get("loss_type", "grpo"))
        return read_settings(cls, section, term=None if term is None
                             else read_settings(term.settings, section))

    @property
    def policy_term(self) -> PolicyTerm:
        """The registered term of `loss_type`."""
        return POLICY_TERMS[self.loss_type]

    @property
    def needs_rollout_logp(self) -> bool:
        """Whether the loss reads `rollout_logp` (a correction, or rollout_dtype with the mask)."""
        return bool(self.rollout_correction) or (
            bool(self.rollout_dtype) and self.off_policy_mask_threshold > 0)

    def rollout_weights(self, old_logp: jax.Array, rollout_logp: jax.Array,
                        mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(weights, outside) [N, C] of `rollout_correction_weights` under this mode and bounds."""
        return rollout_correction_weights(old_logp, rollout_logp, mask, self.rollout_correction,
                                          low=self.rollout_correction_min or None,
                                          high=self.rollout_correction_max or None)
