"""Text metrics of open-format answers: sentence ROUGE and an evaluation's corpus metrics.

ROUGE as `rouge-score`'s defaults: lower-cased [a-z0-9] runs, no stemming, F1 = 2 P R / (P + R).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import sacrebleu

from sallm_jax.metrics.edit_distance import corpus_word_error_rate
from sallm_jax.metrics.meteor import meteor

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's default tokenisation: lower-case, runs of ASCII letters and digits."""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _f1(overlap: int, num_predicted: int, num_reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / num_predicted, overlap / num_reference
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """Sentence ROUGE-L F1 in [0, 1]."""
    p, r = rouge_tokens(prediction), rouge_tokens(reference)
    if not p or not r:
        return 0.0
    return _f1(lcs_length(p, r), len(p), len(r))


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(prediction: str, reference: str, n: int) -> float:
    """Sentence ROUGE-N F1 in [0, 1]: n-gram counts clipped by the reference's counts."""
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    p, r = _ngrams(rouge_tokens(prediction), n), _ngrams(rouge_tokens(reference), n)
    return _f1(sum((p & r).values()), sum(p.values()), sum(r.values()))


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus metrics of an evaluation, 0-100: `metrics.names.METRICS` but "accuracy".

    bleu, chrf: sacrebleu's; rouge*, meteor: sentence means; wer: corpus WER, can exceed 100.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    preds = [p.strip() for p in predictions]
    refs = [list(references)]
    pairs = list(zip(preds, references, strict=True))

    def mean(score) -> float:
        return 100.0 * sum(score(p, r) for p, r in pairs) / len(pairs)

    return {
        "bleu": sacrebleu.corpus_bleu(preds, refs).score,
        "chrf": sacrebleu.corpus_chrf(preds, refs).score,
        "rouge1": mean(lambda p, r: rouge_n(p, r, 1)),
        "rouge2": mean(lambda p, r: rouge_n(p, r, 2)),
        "rouge_l": mean(rouge_l),
        "meteor": mean(meteor),
        "wer": 100.0 * corpus_word_error_rate(preds, list(references)),
    }
