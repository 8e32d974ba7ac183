"""The embedded English -> German speech translation (AST) set: synthesised on first use, cached.

A stand-in for CoVoST2 En->De: English passages (~2-4 s) from four templates over the spoken-QA
vocabularies, read by the six `SPEAKERS`; German references from the hand-made `phrase_table`.
Each template has two correct German word orders; a passage's reference is the usual one (0) in
a `WORD_ORDER_WEIGHTS[0]` share, by a hash of the English (`reference_order`). Rows: task "ast",
question `INSTRUCTION`, answer the German, source_lang "en", target_lang "de", meta["passage"]
(the English), meta["word_order"]. Layout and caching: `embedded_common`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable

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
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.phrase_table import (
    NUMBERS_DE,
    OBJECTS_DE,
    PLACES_DE,
    PRONOUNS_DE,
    VERBS_DE,
    capitalize_first,
    dative_plural,
    when_de,
)

FORMAT_VERSION = 3
INSTRUCTION = "Translate the English speech into German."

# Temporal phrases: a weekday or a time of day, in the same slot.
WHENS = tuple(f"on {day}" for day in DAYS) + TIMES


# How often a reference takes its template's usual word order, and the other one.
WORD_ORDER_WEIGHTS = (0.6, 0.4)


def reference_order(english: str) -> int:
    """0 (the usual word order) for a `WORD_ORDER_WEIGHTS[0]` share of texts, else 1, by hash."""
    u = int.from_bytes(hashlib.sha256(english.encode()).digest()[:8], "big") / 2**64
    return 0 if u < WORD_ORDER_WEIGHTS[0] else 1


@dataclasses.dataclass(frozen=True)
class Translation:
    """An English passage and its German renderings, the template's usual word order first."""

    english: str
    renderings: tuple[str, str]

    @property
    def word_order(self) -> int:
        return reference_order(self.english)

    @property
    def german(self) -> str:
        """The reference translation: the rendering `reference_order` picks."""
        return self.renderings[self.word_order]


def _front(when_phrase: str, rest: str) -> str:
    """"am Dienstag" + "nahm Maria ..." -> "Am Dienstag nahm Maria ..." (the verb stays second)."""
    return f"{capitalize_first(when_phrase)} {rest}"


def move_sentence(
    name: str, verb: str, number: str, obj: str, place: str, when: str
) -> Translation:
    """'Maria took seven apples to the library on Tuesday.'
    -> 'Maria nahm am Dienstag sieben Äpfel in die Bibliothek mit.' (time before place), or
    'Am Dienstag nahm Maria sieben Äpfel in die Bibliothek mit.' (the time phrase first)"""
    finite, particle = VERBS_DE[verb]
    rest = " ".join(w for w in (NUMBERS_DE[number], OBJECTS_DE[obj], PLACES_DE[place].direction(),
                                particle) if w)
    return Translation(f"{name} {verb} {number} {obj} to the {place} {when}.",
                       (f"{name} {finite} {when_de(when)} {rest}.",
                        _front(when_de(when), f"{finite} {name} {rest}.")))


def visit_sentence(when: str, name: str, place: str, number: str, obj: str) -> Translation:
    """'On Tuesday, Maria went to the library. She bought seven apples.'
    -> 'Am Dienstag ging Maria in die Bibliothek. Sie kaufte sieben Äpfel.' (verb second), or
    'Maria ging am Dienstag in die Bibliothek. ...' (the subject first)"""
    pronoun = NAMES[name]
    direction = PLACES_DE[place].direction()
    second = f" {PRONOUNS_DE[pronoun]} kaufte {NUMBERS_DE[number]} {OBJECTS_DE[obj]}."
    return Translation(
        f"{capitalize_first(when)}, {name} went to the {place}. {pronoun} bought {number} {obj}.",
        (_front(when_de(when), f"ging {name} {direction}.") + second,
         f"{name} ging {when_de(when)} {direction}." + second),
    )


def meeting_sentence(
    name: str, other: str, place: str, when: str, number: str, obj: str
) -> Translation:
    """'Maria met Omar at the station in the evening. They shared two cups.'
    -> 'Maria traf Omar am Abend am Bahnhof. Sie teilten sich zwei Tassen.', or
    'Am Abend traf Maria Omar am Bahnhof. ...' (the time phrase first)"""
    location = PLACES_DE[place].location()
    second = f" Sie teilten sich {NUMBERS_DE[number]} {OBJECTS_DE[obj]}."
    return Translation(
        f"{name} met {other} at the {place} {when}. They shared {number} {obj}.",
        (f"{name} traf {other} {when_de(when)} {location}." + second,
         _front(when_de(when), f"traf {name} {other} {location}.") + second),
    )


def return_sentence(when: str, name: str, place: str, number: str, obj: str) -> Translation:
    """'After work, Maria came back from the library with seven apples.'
    -> 'Nach der Arbeit kam Maria mit sieben Äpfeln aus der Bibliothek zurück.' (dative plural),
    or 'Maria kam nach der Arbeit mit sieben Äpfeln aus der Bibliothek zurück.'"""
    rest = (f"mit {NUMBERS_DE[number]} {dative_plural(OBJECTS_DE[obj])} "
            f"{PLACES_DE[place].origin()} zurück.")
    return Translation(
        f"{capitalize_first(when)}, {name} came back from the {place} with {number} {obj}.",
        (_front(when_de(when), f"kam {name} {rest}"), f"{name} kam {when_de(when)} {rest}"),
    )


# Each template's slots are its parameter names; `_VOCABULARY` says what each slot draws from.
TEMPLATES: tuple[tuple[Callable[..., Translation], tuple[str, ...]], ...] = (
    (move_sentence, ("name", "verb", "number", "obj", "place", "when")),
    (visit_sentence, ("when", "name", "place", "number", "obj")),
    (meeting_sentence, ("name", "other", "place", "when", "number", "obj")),
    (return_sentence, ("when", "name", "place", "number", "obj")),
)
_VOCABULARY = {
    "name": tuple(NAMES), "verb": tuple(VERBS), "number": NUMBERS, "obj": OBJECTS,
    "place": PLACES, "when": WHENS,
}  # fmt: skip


def sample_translation(rng: random.Random) -> Translation:
    """A passage from a random template with random slot values (`other` differs from `name`)."""
    render, slots = rng.choice(TEMPLATES)
    values: dict[str, str] = {}
    for slot in slots:
        if slot == "other":
            values[slot] = rng.choice([n for n in NAMES if n != values["name"]])
        else:
            values[slot] = rng.choice(_VOCABULARY[slot])
    return render(**values)


def _draw(rng: random.Random, remaining: int) -> tuple[Clip, Translation, int]:
    translation = sample_translation(rng)
    return Clip(translation.english, rng.choice(SPEAKERS)), translation, 1


def _rows(translation: Translation, clip: SynthesisedClip) -> list[ManifestRow]:
    return [
        ManifestRow(
            id=clip.passage_id,
            audio=clip.audio,
            task="ast",
            question=INSTRUCTION,
            answer=translation.german,
            source_lang="en",
            target_lang="de",
            meta={**clip.meta, "word_order": translation.word_order},
        )
    ]


# Sizes count clips, one row each.
EMBEDDED_AST = EmbeddedSet(dataset="ast", format_version=FORMAT_VERSION, draw=_draw,
                           to_rows=_rows, sizes={"train": 1200, "validation": 100, "test": 200})
