"""The embedded multiple-choice audio QA (AQA) set, in R1-AQA's format: synthesised, cached.

A stand-in for AVQA / MMAU's speech category: one question per spoken-QA passage
(`embedded_sqa.TEMPLATES`) about what was said or which of four `VOICES` said it, with four
shuffled choices (`make_choices`). Rows: task "aqa", the bare question (`prompts.user_text` adds
the options), choices, answer_index, answer, meta["category"] = "speech". Layout and caching:
`embedded_common`.
"""

from __future__ import annotations

import dataclasses
import random
import re

from sallm_jax.data.embedded_common import (
    DAYS,
    NAMES,
    NUMBERS,
    OBJECTS,
    PLACES,
    TIMES,
    Clip,
    EmbeddedSet,
    SynthesisedClip,
)
from sallm_jax.data.embedded_sqa import QA, TEMPLATES
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.speech_synth import Speaker

FORMAT_VERSION = 2
NUM_CHOICES = 4
VOICE_QUESTION = "Which of these best describes the speaker?"

# Two speakers per label. The female variants at pitch 65-75 and male ones at 35-50 are an octave
# apart in fundamental frequency; en-us and en-gb (eSpeak's "en") differ in rhoticity and vowels.
VOICES = {
    "an American man": (Speaker("en-us", rate=175, pitch=45),
                        Speaker("en-us+m3", rate=195, pitch=35)),
    "an American woman": (Speaker("en-us+f3", rate=185, pitch=70),
                          Speaker("en-us+f2", rate=205, pitch=65)),
    "a British man": (Speaker("en-gb", rate=165, pitch=40),
                      Speaker("en-gb+m3", rate=190, pitch=35)),
    "a British woman": (Speaker("en-gb+f3", rate=175, pitch=75),
                        Speaker("en-gb+f2", rate=200, pitch=65)),
}  # fmt: skip

# Each question kind's answers come from one vocabulary; distractors are drawn from it too.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "name": tuple(NAMES), "number": NUMBERS, "object": OBJECTS, "place": PLACES, "day": DAYS,
    "time": TIMES, "voice": tuple(VOICES),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MultipleChoice:
    question: str
    choices: tuple[str, ...]
    answer_index: int
    kind: str


def _mentions(text: str, value: str) -> bool:
    """Whether `value` occurs in `text` as whole words ("two" is not in "twenty")."""
    return re.search(rf"\b{re.escape(value)}\b", text, re.IGNORECASE) is not None


def make_choices(rng: random.Random, qa: QA, heard: str) -> MultipleChoice:
    """`qa`'s answer and three distractors from its kind's vocabulary, in a shuffled order.

    No distractor occurs in `heard` (the passage text) or in the question.
    """
    candidates = [
        value
        for value in VOCABULARY[qa.kind]
        if value != qa.key and not _mentions(heard, value) and not _mentions(qa.question, value)
    ]
    choices = [qa.key, *rng.sample(candidates, NUM_CHOICES - 1)]
    rng.shuffle(choices)
    return MultipleChoice(qa.question, tuple(choices), choices.index(qa.key), qa.kind)


def sample_item(rng: random.Random) -> tuple[str, str, Speaker, MultipleChoice]:
    """(passage text, voice label, speaker, question): one question about one spoken passage."""
    passage = rng.choice(TEMPLATES)(rng)
    label = rng.choice(list(VOICES))
    speaker = rng.choice(VOICES[label])
    voice_qa = QA(VOICE_QUESTION, (label,), "voice", label)
    qa = rng.choice((*passage.questions, voice_qa))
    return passage.text, label, speaker, make_choices(rng, qa, passage.text)


def _draw(rng: random.Random, remaining: int) -> tuple[Clip, tuple[str, MultipleChoice], int]:
    text, label, speaker, item = sample_item(rng)
    return Clip(text, speaker), (label, item), 1


def _rows(labelled: tuple[str, MultipleChoice], clip: SynthesisedClip) -> list[ManifestRow]:
    label, item = labelled
    return [
        ManifestRow(
            id=clip.passage_id,
            audio=clip.audio,
            task="aqa",
            question=item.question,
            answer=item.choices[item.answer_index],
            choices=list(item.choices),
            answer_index=item.answer_index,
            meta={**clip.meta, "category": "speech", "question_kind": item.kind, "voice": label},
        )
    ]


# Sizes count clips, one row each.
EMBEDDED_AQA = EmbeddedSet(dataset="aqa", format_version=FORMAT_VERSION, draw=_draw,
                           to_rows=_rows, sizes={"train": 1200, "validation": 100, "test": 200})
