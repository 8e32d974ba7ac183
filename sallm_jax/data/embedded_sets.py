"""The embedded data sets by name: one `EmbeddedSet` record each, what `data.name` picks from."""

from __future__ import annotations

from sallm_jax.data.embedded_aqa import EMBEDDED_AQA
from sallm_jax.data.embedded_asr import EMBEDDED_ASR
from sallm_jax.data.embedded_ast import EMBEDDED_AST
from sallm_jax.data.embedded_common import EmbeddedSet
from sallm_jax.data.embedded_sqa import EMBEDDED_SQA

EMBEDDED_SETS: dict[str, EmbeddedSet] = {
    embedded.name: embedded for embedded in (EMBEDDED_SQA, EMBEDDED_AST, EMBEDDED_AQA, EMBEDDED_ASR)
}


def task_sets() -> dict[str, EmbeddedSet]:
    """The sets a run's `data.name` may name: all but the base stage's own corpus."""
    return {name: embedded for name, embedded in EMBEDDED_SETS.items()
            if not embedded.base_corpus}
