"""Word and character error rates against jiwer and hand-computed edit distances."""

import random

import jiwer
import pytest

from sallm_jax.metrics.edit_distance import (
    char_error_rate,
    corpus_word_error_rate,
    edit_distance,
    word_error_rate,
)

_VOCAB = ["the", "cat", "sat", "on", "a", "mat", "Mat", "dog,", "ran", "über", "straße"]


def _sentences(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(_VOCAB) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def test_edit_distance_hand_computed():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("flaw", "lawn") == 2  # -f, +n
    assert edit_distance([], "abc") == 3
    assert edit_distance("abc", []) == 3
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("ab", "ba") == 2  # no transpositions in Levenshtein


def test_sentence_rates_match_jiwer():
    rng = random.Random(0)
    hyps, refs = _sentences(rng, 200), _sentences(rng, 200)
    for hyp, ref in zip(hyps, refs, strict=True):
        # jiwer's argument order is (reference, hypothesis).
        assert word_error_rate(hyp, ref) == pytest.approx(jiwer.wer(ref, hyp), abs=1e-12)
        assert char_error_rate(hyp, ref) == pytest.approx(jiwer.cer(ref, hyp), abs=1e-12)
    # Leading / trailing and doubled spaces are treated as jiwer treats them.
    assert char_error_rate("  a b ", "a  b") == pytest.approx(jiwer.cer("a  b", "  a b "))
    assert word_error_rate(" a  b ", "a b c") == pytest.approx(jiwer.wer("a b c", " a  b "))


def test_corpus_wer_matches_jiwer():
    rng = random.Random(1)
    hyps, refs = _sentences(rng, 50), _sentences(rng, 50)
    assert corpus_word_error_rate(hyps, refs) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    # Hand-computed: 1 substitution over 3 + 1 deletion over 2 -> 2 / 5.
    assert corpus_word_error_rate(["a b x", "c"], ["a b c", "c d"]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        corpus_word_error_rate(["a"], [])


def test_empty_reference():
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("a b", "") == 2.0
