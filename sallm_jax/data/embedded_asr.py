"""The embedded speech recognition (ASR) corpus the base model learns to hear from.

Spoken-QA and translation-set English passages read by `CORPUS_SPEAKERS`; rows: task "asr",
question `INSTRUCTION`, answer the passage. Its train split holds no passage of any embedded set's
validation or test split (`embedded_common.held_out`). Layout and caching: `embedded_common`.
"""

from __future__ import annotations

import random

from sallm_jax.data.embedded_ast import sample_translation
from sallm_jax.data.embedded_common import SPEAKERS, Clip, EmbeddedSet, SynthesisedClip
from sallm_jax.data.embedded_sqa import sample_passage
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.speech_synth import Speaker

FORMAT_VERSION = 1
INSTRUCTION = "Transcribe the audio."

# The task sets' speakers and four more, so the base hears more voices than any task shows.
CORPUS_SPEAKERS = SPEAKERS + (
    Speaker("en-us+m2", rate=185, pitch=55),
    Speaker("en-gb+f4", rate=170, pitch=60),
    Speaker("en-us+m5", rate=200, pitch=40),
    Speaker("en-gb+f1", rate=180, pitch=68),
)


def sample_text(rng: random.Random) -> str:
    """A spoken-QA passage or a translation set's English passage, with equal odds."""
    if rng.random() < 0.5:
        return sample_passage(rng).text
    return sample_translation(rng).english


def _draw(rng: random.Random, remaining: int) -> tuple[Clip, str, int]:
    text = sample_text(rng)
    return Clip(text, rng.choice(CORPUS_SPEAKERS)), text, 1


def _rows(text: str, clip: SynthesisedClip) -> list[ManifestRow]:
    return [ManifestRow(id=clip.passage_id, audio=clip.audio, task="asr", question=INSTRUCTION,
                        answer=text, meta=clip.meta)]


# The base stage's transcription corpus; sizes count clips.
EMBEDDED_ASR = EmbeddedSet(dataset="asr", format_version=FORMAT_VERSION, draw=_draw,
                           to_rows=_rows, sizes={"train": 4000, "validation": 100, "test": 100},
                           base_corpus=True)
