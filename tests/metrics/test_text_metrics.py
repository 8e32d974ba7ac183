"""ROUGE against rouge-score and hand-computed values; the corpus metrics of an evaluation."""

import random

import jiwer
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from sallm_jax.metrics.meteor import meteor
from sallm_jax.metrics.text import lcs_length, rouge_l, rouge_n, text_metrics


def test_lcs_and_rouge_l_hand_computed():
    assert lcs_length("a b c d e".split(), "a c e f".split()) == 3
    # pred 5 tokens, ref 4 tokens, LCS 3: P = 3/5, R = 3/4, F = 2PR/(P+R) = 2/3
    assert rouge_l("A b, c d e", "a c e f") == pytest.approx(2 / 3)
    assert rouge_l("", "a") == 0.0
    assert rouge_l("x y", "a b") == 0.0
    # ROUGE-2: bigrams {ab, bc, cd} vs {ab, bx}: overlap 1, P = 1/3, R = 1/2, F = 2/5.
    assert rouge_n("a b c d", "a b x", 2) == pytest.approx(0.4)
    # Counts are clipped: "a a a" vs "a": overlap 1, P = 1/3, R = 1, F = 1/2.
    assert rouge_n("a a a", "a", 1) == pytest.approx(0.5)


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rng = random.Random(0)
    vocab = ["The", "cat", "sat", "on", "the", "mat.", "dog's", "ran", "2", "über", "Cats", "-"]
    for _ in range(200):
        pred = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))
        want = scorer.score(ref, pred)  # rouge-score takes (target, prediction)
        assert rouge_n(pred, ref, 1) == pytest.approx(want["rouge1"].fmeasure, abs=1e-12)
        assert rouge_n(pred, ref, 2) == pytest.approx(want["rouge2"].fmeasure, abs=1e-12)
        assert rouge_l(pred, ref) == pytest.approx(want["rougeL"].fmeasure, abs=1e-12)


def test_text_metrics_perfect_and_disjoint():
    refs = ["Maria went to the library.", "Seven apples."]
    perfect = text_metrics(refs, refs)
    assert set(perfect) == {"bleu", "chrf", "rouge1", "rouge2", "rouge_l", "meteor", "wer"}
    assert perfect["bleu"] == pytest.approx(100.0)
    assert perfect["chrf"] == pytest.approx(100.0)
    assert perfect["rouge1"] == perfect["rouge2"] == perfect["rouge_l"] == pytest.approx(100.0)
    assert perfect["wer"] == 0.0
    # METEOR of an identical text is below 100: one chunk still costs 0.5 / m**3.
    assert perfect["meteor"] == pytest.approx(50 * ((1 - 0.5 / 6**3) + (1 - 0.5 / 3**3)))
    wrong = text_metrics(["zzz", "qqq"], refs)
    assert wrong["bleu"] == 0.0 and wrong["rouge_l"] == 0.0 and wrong["meteor"] == 0.0
    assert wrong["wer"] == pytest.approx(100.0)  # 2 substitutions + 5 deletions over 7 words
    with pytest.raises(ValueError):
        text_metrics(["a"], refs)


def test_text_metrics_against_references():
    preds = ["the cat sat on a mat", "  seven green apples ", "nothing"]
    refs = ["The cat sat on the mat.", "Seven apples.", "Something else entirely here."]
    got = text_metrics(preds, refs)
    stripped = [p.strip() for p in preds]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(stripped, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(stripped, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    for ours, theirs in [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")]:
        want = 100 * sum(s[theirs].fmeasure for s in scores) / len(scores)
        assert got[ours] == pytest.approx(want)
    assert got["meteor"] == pytest.approx(
        100 * sum(meteor(p, r) for p, r in zip(preds, refs, strict=True)) / 3)
    assert got["wer"] == pytest.approx(100 * jiwer.wer(refs, stripped))
