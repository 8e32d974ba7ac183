"""A hand-made English -> German phrase table for the embedded translation set's slot vocabulary.

Only the grammar the templates need: definite articles by gender and case with the usual
contractions (zum, ins, am, vom, ...); per place, the prepositions for "to the X" (accusative
after a two-way preposition), "at the X" and "from the X" (dative); plural objects and their
dative plural; dative time phrases; numbers; past-tense verbs with their separable particles.
"""

from __future__ import annotations

import dataclasses

# Definite article by gender (m, f, n, pl) and case.
_ARTICLES = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
# Written German contracts these preposition + article pairs; the long forms read as emphatic.
_CONTRACTIONS = {
    ("an", "dem"): "am", ("an", "das"): "ans", ("bei", "dem"): "beim", ("in", "dem"): "im",
    ("in", "das"): "ins", ("von", "dem"): "vom", ("zu", "dem"): "zum", ("zu", "der"): "zur",
}  # fmt: skip
# Two-way prepositions take the accusative for a direction and the dative for a location.
_TWO_WAY = frozenset({"an", "auf", "in"})


def article(gender: str, case: str) -> str:
    """The definite article, e.g. article("f", "dat") == "der"."""
    return _ARTICLES[case][gender]


def prepositional_phrase(preposition: str, noun: str, gender: str | None, case: str) -> str:
    """`preposition` + article (contracted as German does) + `noun`; gender None: no article."""
    if gender is None:
        return f"{preposition} {noun}"
    det = article(gender, case)
    contracted = _CONTRACTIONS.get((preposition, det))
    return f"{contracted} {noun}" if contracted else f"{preposition} {det} {noun}"


@dataclasses.dataclass(frozen=True)
class Place:
    """A place noun and the prepositions it takes for "to the ..." and "at the ..."."""

    noun: str
    gender: str
    to: str  # "zu" (dative) or a two-way preposition (accusative for a direction)
    at: str  # a two-way preposition (dative for a location)

    def direction(self) -> str:
        """The German for "to the X": "in die Bibliothek", "zum Bahnhof", "auf den Markt"."""
        case = "acc" if self.to in _TWO_WAY else "dat"
        return prepositional_phrase(self.to, self.noun, self.gender, case)

    def location(self) -> str:
        """The German for "at the X": "in der Bibliothek", "am Bahnhof", "auf dem Markt"."""
        return prepositional_phrase(self.at, self.noun, self.gender, "dat")

    def origin(self) -> str:
        """The German for "from the X": `aus` for `in` places ("aus der Bibliothek"), else `von`."""
        preposition = "aus" if self.to == "in" else "von"
        return prepositional_phrase(preposition, self.noun, self.gender, "dat")


PLACES_DE = {
    "library": Place("Bibliothek", "f", to="in", at="in"),
    "market": Place("Markt", "m", to="auf", at="auf"),
    "school": Place("Schule", "f", to="zu", at="in"),
    "station": Place("Bahnhof", "m", to="zu", at="an"),
    "garden": Place("Garten", "m", to="in", at="in"),
    "museum": Place("Museum", "n", to="in", at="in"),
    "hospital": Place("Krankenhaus", "n", to="in", at="in"),
    "bakery": Place("Bäckerei", "f", to="zu", at="in"),
    "office": Place("Büro", "n", to="in", at="in"),
    "park": Place("Park", "m", to="in", at="in"),
    "beach": Place("Strand", "m", to="an", at="an"),
    "kitchen": Place("Küche", "f", to="in", at="in"),
    "harbour": Place("Hafen", "m", to="zu", at="in"),
    "theatre": Place("Theater", "n", to="in", at="in"),
}

OBJECTS_DE = {  # plural nouns (nominative = accusative plural)
    "apples": "Äpfel", "books": "Bücher", "chairs": "Stühle", "letters": "Briefe",
    "cups": "Tassen", "boxes": "Kisten", "flowers": "Blumen", "pencils": "Bleistifte",
    "shirts": "Hemden", "lamps": "Lampen", "bottles": "Flaschen", "tickets": "Fahrkarten",
    "plates": "Teller", "keys": "Schlüssel",
}  # fmt: skip


def dative_plural(noun: str) -> str:
    """The dative plural: -n unless the plural ends in -n or -s ("Äpfeln", but "Tassen")."""
    return noun if noun.endswith(("n", "s")) else noun + "n"


NUMBERS_DE = {
    "two": "zwei", "three": "drei", "four": "vier", "five": "fünf", "six": "sechs",
    "seven": "sieben", "eight": "acht", "nine": "neun", "ten": "zehn", "eleven": "elf",
    "twelve": "zwölf", "twenty": "zwanzig",
}  # fmt: skip

DAYS_DE = {
    "Monday": "Montag", "Tuesday": "Dienstag", "Wednesday": "Mittwoch", "Thursday": "Donnerstag",
    "Friday": "Freitag", "Saturday": "Samstag", "Sunday": "Sonntag",
}  # fmt: skip

# English time-of-day phrase -> (preposition, noun, gender or None); all take the dative.
_TIMES_DE = {
    "in the morning": ("an", "Morgen", "m"),
    "in the afternoon": ("an", "Nachmittag", "m"),
    "in the evening": ("an", "Abend", "m"),
    "at night": ("in", "Nacht", "f"),
    "at noon": ("an", "Mittag", "m"),
    "at midnight": ("um", "Mitternacht", None),
    "at dawn": ("in", "Morgengrauen", "n"),
    "at dusk": ("in", "Abenddämmerung", "f"),
    "before lunch": ("vor", "Mittagessen", "n"),
    "after dinner": ("nach", "Abendessen", "n"),
    "after work": ("nach", "Arbeit", "f"),
    "before breakfast": ("vor", "Frühstück", "n"),
}


def when_de(when: str) -> str:
    """A temporal phrase: "on Tuesday" -> "am Dienstag", "after work" -> "nach der Arbeit"."""
    if when.startswith("on ") and when[3:] in DAYS_DE:
        return prepositional_phrase("an", DAYS_DE[when[3:]], "m", "dat")  # weekdays are masculine
    if when not in _TIMES_DE:
        raise KeyError(f"when_de: no German for {when!r}")
    return prepositional_phrase(*_TIMES_DE[when], "dat")


# English simple past -> (German Präteritum, 3rd person singular; separable particle or "").
# "take something somewhere" is mitnehmen, whose particle goes to the end of the clause.
VERBS_DE = {
    "took": ("nahm", "mit"),
    "brought": ("brachte", ""),
    "carried": ("trug", ""),
    "sent": ("schickte", ""),
}

PRONOUNS_DE = {"He": "Er", "She": "Sie", "They": "Sie"}


def capitalize_first(text: str) -> str:
    """Upper-case the first letter only, unlike `str.capitalize`: "am Montag" -> "Am Montag"."""
    return text[:1].upper() + text[1:]
