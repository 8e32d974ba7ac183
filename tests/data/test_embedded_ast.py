"""The embedded En->De translation set: hand-checked German in both word orders, how often each
is the reference, determinism, split hygiene."""

import hashlib
import random

import pytest

from sallm_jax.data import embedded_ast
from sallm_jax.data import embedded_common as vocab
from sallm_jax.data.embedded_ast import (
    EMBEDDED_AST,
    INSTRUCTION,
    meeting_sentence,
    move_sentence,
    return_sentence,
    visit_sentence,
)
from sallm_jax.data.embedded_sqa import EMBEDDED_SQA
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.phrase_table import DAYS_DE, NUMBERS_DE, OBJECTS_DE, PLACES_DE

SIZES = {"num_train": 8, "num_validation": 3, "num_test": 4}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ast") / "embedded"
    return root, EMBEDDED_AST.build(root, seed=3, **SIZES)


# (template output, English, German written by hand in the template's usual word order, and
# in the other).
HAND_CHECKED = [
    (move_sentence("Maria", "took", "seven", "apples", "library", "on Tuesday"),
     "Maria took seven apples to the library on Tuesday.",
     "Maria nahm am Dienstag sieben Äpfel in die Bibliothek mit.",
     "Am Dienstag nahm Maria sieben Äpfel in die Bibliothek mit."),
    (move_sentence("Lucy", "sent", "four", "letters", "museum", "after dinner"),
     "Lucy sent four letters to the museum after dinner.",
     "Lucy schickte nach dem Abendessen vier Briefe ins Museum.",
     "Nach dem Abendessen schickte Lucy vier Briefe ins Museum."),
    (visit_sentence("on Friday", "Omar", "station", "twelve", "cups"),
     "On Friday, Omar went to the station. He bought twelve cups.",
     "Am Freitag ging Omar zum Bahnhof. Er kaufte zwölf Tassen.",
     "Omar ging am Freitag zum Bahnhof. Er kaufte zwölf Tassen."),
    (visit_sentence("at night", "Grace", "beach", "five", "bottles"),
     "At night, Grace went to the beach. She bought five bottles.",
     "In der Nacht ging Grace an den Strand. Sie kaufte fünf Flaschen.",
     "Grace ging in der Nacht an den Strand. Sie kaufte fünf Flaschen."),
    (meeting_sentence("Emma", "Ken", "market", "in the evening", "two", "keys"),
     "Emma met Ken at the market in the evening. They shared two keys.",
     "Emma traf Ken am Abend auf dem Markt. Sie teilten sich zwei Schlüssel.",
     "Am Abend traf Emma Ken auf dem Markt. Sie teilten sich zwei Schlüssel."),
    (return_sentence("before breakfast", "Tom", "kitchen", "three", "books"),
     "Before breakfast, Tom came back from the kitchen with three books.",
     "Vor dem Frühstück kam Tom mit drei Büchern aus der Küche zurück.",
     "Tom kam vor dem Frühstück mit drei Büchern aus der Küche zurück."),
    (return_sentence("on Sunday", "Nina", "school", "twenty", "plates"),
     "On Sunday, Nina came back from the school with twenty plates.",
     "Am Sonntag kam Nina mit zwanzig Tellern von der Schule zurück.",
     "Nina kam am Sonntag mit zwanzig Tellern von der Schule zurück."),
]  # fmt: skip


@pytest.mark.parametrize("translation, english, usual, other", HAND_CHECKED)
def test_hand_checked_translations(translation, english, usual, other):
    assert translation.english == english
    assert translation.renderings == (usual, other)
    assert translation.german == translation.renderings[translation.word_order]


def test_references_vary_in_word_order_at_the_stated_rate():
    rng = random.Random(1)
    passages = {embedded_ast.sample_translation(rng) for _ in range(4000)}
    orders = [t.word_order for t in passages]
    # 0.6 of 3,000+ distinct passages: a binomial std of under 0.01.
    assert abs(orders.count(0) / len(orders) - embedded_ast.WORD_ORDER_WEIGHTS[0]) < 0.03
    # Both renderings hold the same words (one capital moves): either is a full translation.
    for t in passages:
        assert sorted(t.renderings[0].lower().split()) == sorted(t.renderings[1].lower().split())
        assert t.renderings[0] != t.renderings[1]


def test_sampled_german_is_well_formed():
    rng = random.Random(0)
    for _ in range(2000):
        t = embedded_ast.sample_translation(rng)
        assert t.german[0].isupper() and t.german.endswith(".") and "  " not in t.german, t
        # The German holds a German number word and object noun (any case), and no English one.
        assert any(f" {n} " in t.german for n in NUMBERS_DE.values()), t
        assert any(o[:-1] in t.german for o in OBJECTS_DE.values()), t
        assert " the " not in t.german and " to " not in t.german, t


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_rows(built):
    root, manifests = built
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    assert {s: len(r) for s, r in rows.items()} == {"train": 8, "validation": 3, "test": 4}
    for row in (r for split_rows in rows.values() for r in split_rows):
        assert (row.task, row.source_lang, row.target_lang) == ("ast", "en", "de")
        assert row.question == INSTRUCTION and row.audio.startswith(str(root))
        assert row.meta["passage"].endswith(".") and row.answer != row.meta["passage"]
        assert row.meta["word_order"] == embedded_ast.reference_order(row.meta["passage"])


def test_instruction_names_no_slot_value():
    # The prompt's text is the same for every clip: it can carry nothing of the passage.
    slot_words = {
        word.lower()
        for table in (vocab.NAMES, vocab.NUMBERS, vocab.OBJECTS, vocab.PLACES, vocab.DAYS,
                      vocab.TIMES, vocab.VERBS, NUMBERS_DE.values(), OBJECTS_DE.values(),
                      DAYS_DE.values(), [p.noun for p in PLACES_DE.values()])
        for value in table
        for word in value.split()
    }
    assert not set(INSTRUCTION.lower().rstrip(".").split()) & (slot_words - {"the", "in"})


def test_same_seed_same_bytes_and_no_shared_passage(built, tmp_path):
    root, manifests = built
    again = tmp_path / "again"
    EMBEDDED_AST.build(again, seed=3, **SIZES)
    assert _digest(again) == _digest(root)
    passages = {s: {r.meta["passage"] for r in read_manifest(p)} for s, p in manifests.items()}
    assert not passages["train"] & passages["validation"]
    assert not passages["train"] & passages["test"]
    assert not passages["validation"] & passages["test"]


def test_refuses_another_embedded_set(built):
    root, _ = built
    with pytest.raises(FileExistsError, match="'ast' set"):
        EMBEDDED_SQA.build(root, seed=3)
