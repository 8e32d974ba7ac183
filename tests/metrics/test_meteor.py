"""METEOR (exact matches) against hand-computed values and nltk with stemming/WordNet disabled."""

import random
from fractions import Fraction

import pytest

from sallm_jax.metrics.meteor import count_chunks, exact_alignment, meteor, meteor_tokens


def _hand_meteor(matches: int, hyp_len: int, ref_len: int, chunks: int) -> float:
    """The paper's formulas with alpha 0.9, beta 3, gamma 0.5, in exact fractions."""
    p, r = Fraction(matches, hyp_len), Fraction(matches, ref_len)
    fmean = 10 * p * r / (r + 9 * p)
    penalty = Fraction(1, 2) * Fraction(chunks, matches) ** 3
    return float(fmean * (1 - penalty))


def test_hand_computed():
    # a b c d vs a b x c d e: m = 4, P = 1, R = 2/3, chunks {a b}, {c d} -> 20/29 * 15/16.
    assert meteor("a b c d", "a b x c d e") == pytest.approx(_hand_meteor(4, 4, 6, 2))
    assert meteor("a b c d", "a b x c d e") == pytest.approx(75 / 116)
    # Identical 6-word sentences: one chunk, penalty 0.5 / 216.
    assert meteor("The cat sat on the mat.", "the cat sat on the mat .") == pytest.approx(
        _hand_meteor(7, 7, 7, 1))
    # Every word matched but no two adjacent in both: 6 chunks, penalty 0.5.
    assert meteor("the cat sat on the mat", "on the mat sat the cat") == pytest.approx(0.5)
    assert meteor("x y", "a b") == 0.0
    assert meteor("", "a b") == 0.0


def test_repeated_words_pair_from_the_right():
    # "the" occurs twice in the hypothesis, once in the reference: the LAST occurrence is
    # paired (as in nltk), giving (1, 2), (2, 1) -> 2 chunks; pairing the first would give 1.
    assert exact_alignment(["the", "mat", "the"], ["a", "the", "mat"]) == [(1, 2), (2, 1)]
    assert count_chunks([(1, 2), (2, 1)]) == 2
    assert meteor("the mat the", "a the mat") == pytest.approx(_hand_meteor(2, 3, 3, 2))


def test_tokens_keep_unicode_words_and_split_punctuation():
    assert meteor_tokens("Die Straße, über!") == ["die", "straße", ",", "über", "!"]


class _NoSynonyms:
    """Stands in for nltk's WordNet reader: no synsets, so nothing is downloaded."""

    def synsets(self, word):
        return []


class _IdentityStemmer:
    def stem(self, word):
        return word


def test_matches_nltk_without_stemming_and_wordnet():
    meteor_score = pytest.importorskip("nltk.translate.meteor_score")
    rng = random.Random(0)
    vocab = ["the", "a", "cat", "mat", "sat", "on", "dog", ".", ","]
    for _ in range(300):
        hyp = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 15)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 15)))
        expected = meteor_score.single_meteor_score(
            meteor_tokens(ref), meteor_tokens(hyp), stemmer=_IdentityStemmer(),
            wordnet=_NoSynonyms())
        assert meteor(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)
