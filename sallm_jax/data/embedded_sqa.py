"""The embedded spoken question answering (SQA) data set: synthesised on first use, then cached.

A stand-in for LibriSQA Part I: template passages (~2-4 s) over the `embedded_common` slot
vocabularies, read by one of six eSpeak NG voices, with one to three open questions each (the
answer's slot value never in the question). A reference is one of four phrasings of its kind
(`PHRASING_WEIGHTS`). One row per question; layout and caching: `embedded_common`.
"""

from __future__ import annotations

import dataclasses
import random

from sallm_jax.data.embedded_common import (
    DAYS,
    NAMES,
    NUMBERS,
    OBJECTS,
    PLACES,
    SPEAKERS,
    TIMES,
    VERBS,
    Clip,
    EmbeddedSet,
    SynthesisedClip,
)
from sallm_jax.data.embedded_common import embedded_corpus_texts as embedded_corpus_texts
from sallm_jax.data.manifest import ManifestRow

FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class QA:
    """One question about a passage and the ways its answer may be phrased; `key` is the answer's
    slot value, which occurs in every phrasing and never in `question`."""

    question: str
    answers: tuple[str, ...]
    kind: str
    key: str
    phrasing: int = 0  # which of its kind's phrasings answers[0] is, once one is drawn


@dataclasses.dataclass(frozen=True)
class Passage:
    text: str
    questions: tuple[QA, ...]


def _move_passage(rng: random.Random) -> Passage:
    """'{name} {verb} {number} {object} to the {place} on {day}|{time}.'"""
    name, (verb, base) = rng.choice(list(NAMES)), rng.choice(list(VERBS.items()))
    number, obj, place = rng.choice(NUMBERS), rng.choice(OBJECTS), rng.choice(PLACES)
    pronoun = NAMES[name]
    if rng.random() < 0.5:
        day = rng.choice(DAYS)
        when = f"on {day}"
        when_qa = QA(
            f"On which day did {name} {base} the {obj} to the {place}?",
            (f"{name} {verb} them on {day}.", f"On {day}.", f"It was on {day}.",
             f"{pronoun} {verb} the {obj} there on {day}."),
            "day", day,
        )  # fmt: skip
    else:
        when = rng.choice(TIMES)
        when_qa = QA(
            f"When did {name} {base} the {obj} to the {place}?",
            (f"{name} {verb} them {when}.", f"{when.capitalize()}.", f"It happened {when}.",
             f"{pronoun} {verb} the {obj} there {when}."),
            "time", when,
        )  # fmt: skip
    questions = (
        QA(f"Where did {name} {base} the {obj}?",
           (f"{name} {verb} the {obj} to the {place}.", f"{pronoun} {verb} them to the {place}.",
            f"To the {place}.", f"The {obj} went to the {place}."),
           "place", place),
        QA(f"How many {obj} did {name} {base}?",
           (f"{name} {verb} {number} {obj}.", f"{pronoun} {verb} {number} of them.",
            f"{number.capitalize()} {obj}.", f"There were {number} {obj}."),
           "number", number),
        QA(f"What did {name} {base} to the {place}?",
           (f"{name} {verb} {number} {obj}.", f"{pronoun} {verb} {obj} to the {place}.",
            f"{number.capitalize()} {obj}.", f"{name} {verb} some {obj} there."),
           "object", obj),
        QA(f"Who {verb} the {obj} to the {place}?",
           (f"{name} {verb} the {obj}.", f"It was {name}.", f"{name} did.",
            f"{name} {verb} them to the {place}."),
           "name", name),
        when_qa,
    )  # fmt: skip
    return Passage(f"{name} {verb} {number} {obj} to the {place} {when}.", questions)


def _visit_passage(rng: random.Random) -> Passage:
    """'On {day}, {name} went to the {place}. {Pronoun} bought {number} {object}.'"""
    name, day, place = rng.choice(list(NAMES)), rng.choice(DAYS), rng.choice(PLACES)
    number, obj = rng.choice(NUMBERS), rng.choice(OBJECTS)
    pronoun = NAMES[name]
    text = f"On {day}, {name} went to the {place}. {pronoun} bought {number} {obj}."
    questions = (
        QA(f"Where did {name} go on {day}?",
           (f"{name} went to the {place}.", f"{pronoun} went to the {place}.",
            f"To the {place}.", f"{name} went to the {place} on {day}."),
           "place", place),
        QA(f"How many {obj} did {name} buy?",
           (f"{name} bought {number} {obj}.", f"{pronoun} bought {number} of them.",
            f"{number.capitalize()} {obj}.", f"{name} bought {number}."),
           "number", number),
        QA(f"What did {name} buy at the {place}?",
           (f"{name} bought {number} {obj}.", f"{pronoun} bought some {obj}.",
            f"{number.capitalize()} {obj}.", f"{name} bought {obj} at the {place}."),
           "object", obj),
        QA(f"On which day did {name} go to the {place}?",
           (f"{name} went there on {day}.", f"On {day}.", f"It was on {day}.",
            f"{pronoun} went to the {place} on {day}."),
           "day", day),
        QA(f"Who went to the {place} on {day}?",
           (f"{name} went to the {place}.", f"It was {name}.", f"{name} did.",
            f"{name} went there on {day}."),
           "name", name),
    )  # fmt: skip
    return Passage(text, questions)


def _meeting_passage(rng: random.Random) -> Passage:
    """'{name} met {other} at the {place} {time}. They shared {number} {object}.'"""
    name, other = rng.sample(list(NAMES), 2)
    place, time, number, obj = (
        rng.choice(PLACES), rng.choice(TIMES), rng.choice(NUMBERS), rng.choice(OBJECTS),
    )  # fmt: skip
    text = f"{name} met {other} at the {place} {time}. They shared {number} {obj}."
    questions = (
        QA(f"Who did {name} meet at the {place}?",
           (f"{name} met {other}.", f"{NAMES[name]} met {other}.", f"{other}.",
            f"{name} met {other} at the {place}."),
           "name", other),
        QA(f"Where did {name} meet {other}?",
           (f"{name} met {other} at the {place}.", f"They met at the {place}.",
            f"At the {place}.", f"{name} met {other} {time} at the {place}."),
           "place", place),
        QA(f"When did {name} meet {other}?",
           (f"They met {time}.", f"{time.capitalize()}.", f"{name} met {other} {time}.",
            f"It happened {time}."),
           "time", time),
        QA(f"How many {obj} did {name} and {other} share?",
           (f"They shared {number} {obj}.", f"{number.capitalize()} {obj}.",
            f"They shared {number} of them.", f"There were {number} {obj}."),
           "number", number),
        QA(f"What did {name} and {other} share?",
           (f"They shared {number} {obj}.", f"{number.capitalize()} {obj}.",
            f"They shared some {obj}.", f"{name} and {other} shared {obj}."),
           "object", obj),
    )  # fmt: skip
    return Passage(text, questions)


# Each returns a passage with all of its questions, one per slot kind.
TEMPLATES = (_move_passage, _visit_passage, _meeting_passage)


# How often each of a kind's four phrasings is the reference: mostly the full sentence that
# restates the question, as in LibriSQA, and otherwise one of three other right answers.
PHRASING_WEIGHTS = (0.55, 0.2, 0.15, 0.1)


def sample_passage(rng: random.Random) -> Passage:
    """A random template's passage, 1..3 of its questions (distinct kinds), one phrasing each.

    Phrasings are drawn by `PHRASING_WEIGHTS`.
    """
    passage = rng.choice(TEMPLATES)(rng)
    chosen = rng.sample(passage.questions, rng.randint(1, 3))
    drawn = []
    for qa in chosen:
        phrasing = rng.choices(range(len(qa.answers)), PHRASING_WEIGHTS)[0]
        drawn.append(dataclasses.replace(qa, answers=(qa.answers[phrasing],), phrasing=phrasing))
    return Passage(passage.text, tuple(drawn))


def _draw(rng: random.Random, remaining: int) -> tuple[Clip, Passage, int]:
    """A passage (its questions cut to the rows still needed) and its speaker."""
    passage = sample_passage(rng)
    speaker = rng.choice(SPEAKERS)
    passage = Passage(passage.text, passage.questions[:remaining])
    return Clip(passage.text, speaker), passage, len(passage.questions)


def _rows(passage: Passage, clip: SynthesisedClip) -> list[ManifestRow]:
    return [
        ManifestRow(
            id=f"{clip.passage_id}-q{q_index}",
            audio=clip.audio,
            task="sqa",
            question=qa.question,
            answer=qa.answers[0],
            meta={**clip.meta, "question_kind": qa.kind, "answer_key": qa.key,
                  "phrasing": qa.phrasing},
        )
        for q_index, qa in enumerate(passage.questions)
    ]


# Sizes count questions (manifest rows), one to three per clip.
EMBEDDED_SQA = EmbeddedSet(dataset="sqa", format_version=FORMAT_VERSION, draw=_draw,
                           to_rows=_rows, sizes={"train": 1200, "validation": 100, "test": 200})
