"""Training health: non-finite steps (`train.on_nonfinite`: "stop" raises `TrainingDiverged`, "skip"
stops after `train.max_nonfinite_skips` in a row), and warnings when the KL or gradient norm leave
their band or jump far above their recent median."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import ml_collections
import numpy as np

POLICIES = ("stop", "skip")
SPIKE_WATCHED = {"grad_norm": "gradient norm", "kl": "KL to the reference"}
SPIKE_WINDOW = 20  # finite steps whose median a spike is measured against
SPIKE_MIN_STEPS = 3  # steps known before a spike can be told from the start's own swings


class TrainingDiverged(RuntimeError):
    """A stage stopped on a non-finite loss or gradient; nothing was written from it."""


@dataclasses.dataclass
class HealthCheck:
    """Host-side watch over each step's metrics (`finite`, `loss`, `grad_norm`, `kl`)."""

    stage: str
    on_nonfinite: str = "stop"
    max_nonfinite_skips: int = 3
    warn_kl_above: float = 1.0
    warn_grad_norm_above: float = 1e3
    warn_zero_grad_steps: int = 3
    warn_spike_factor: float = 10.0
    skipped: int = 0
    _in_a_row: int = 0
    _zero_grads: int = 0
    _recent: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, train: ml_collections.ConfigDict, stage: str) -> HealthCheck:
        return cls(stage=stage, **train.to_dict())

    def after_step(self, step: int, metrics: Mapping) -> None:
        """Check step `step`'s metrics (device arrays or numbers). Raises `TrainingDiverged` on a
        non-finite step under "stop", or on too many in a row under "skip"."""
        values = {k: float(np.asarray(v)) for k, v in metrics.items()
                  if k in ("loss", "grad_norm", "kl")}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        if not bool(np.asarray(metrics["finite"])):
            self.skipped += 1
            self._in_a_row += 1
            where = (f"[{self.stage}] step {step}: non-finite loss or gradients ({shown}); the "
                     "update was not applied")
            if self.on_nonfinite == "stop":
                raise TrainingDiverged(
                    f"{where}. The run stops with the parameters of step {step - 1}; lower the "
                    "learning rate, or set train.on_nonfinite=skip to step over such batches.")
            if self._in_a_row > self.max_nonfinite_skips:
                raise TrainingDiverged(
                    f"{where}, {self._in_a_row} steps in a row (train.max_nonfinite_skips="
                    f"{self.max_nonfinite_skips}); the run stops.")
            logging.warning("%s (skipped: %d so far)", where, self.skipped)
            return
        self._in_a_row = 0
        grad_norm = values.get("grad_norm")
        self._zero_grads = self._zero_grads + 1 if grad_norm == 0.0 else 0
        if self._zero_grads == self.warn_zero_grad_steps:
            logging.warning("[%s] step %d: the gradient norm has been exactly 0 for %d steps: "
                            "nothing trains (a collapsed policy, or groups whose rewards are "
                            "all equal)", self.stage, step, self._zero_grads)
        if grad_norm is not None and grad_norm > self.warn_grad_norm_above:
            logging.warning("[%s] step %d: gradient norm %.4g above %.4g "
                            "(train.warn_grad_norm_above)", self.stage, step, grad_norm,
                            self.warn_grad_norm_above)
        if values.get("kl", 0.0) > self.warn_kl_above:
            logging.warning("[%s] step %d: KL to the reference %.4g above %.4g "
                            "(train.warn_kl_above): the policy is moving far", self.stage, step,
                            values["kl"], self.warn_kl_above)
        for name, value in values.items():
            if name in SPIKE_WATCHED:
                self._watch_spike(step, name, value)

    def _watch_spike(self, step: int, name: str, value: float) -> None:
        """Warn when `value` passes `warn_spike_factor` times the median of the last
        `SPIKE_WINDOW` finite steps (once at least `SPIKE_MIN_STEPS` are known)."""
        recent = self._recent.setdefault(name, [])
        if len(recent) >= SPIKE_MIN_STEPS and (median := float(np.median(recent))) > 0 and (
                value > self.warn_spike_factor * median):
            logging.warning("[%s] step %d: %s %.4g is %.0fx its median over the last %d steps "
                            "(%.4g); beyond train.warn_spike_factor=%g, the update may be "
                            "diverging (a learning rate too high?)", self.stage, step,
                            SPIKE_WATCHED[name], value, value / median, len(recent), median,
                            self.warn_spike_factor)
        recent.append(value)
        del recent[:-SPIKE_WINDOW]
