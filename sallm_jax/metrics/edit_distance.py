"""Levenshtein distance; word and character error rates with jiwer's default tokenisation.

WER: whitespace-separated words (jiwer splits on spaces only); CER: stripped text's characters.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def edit_distance(hypothesis: Sequence[Hashable], reference: Sequence[Hashable]) -> int:
    """Fewest substitutions, insertions and deletions that turn one sequence into the other."""
    if not hypothesis or not reference:
        return len(hypothesis) + len(reference)
    vocab: dict[Hashable, int] = {}
    ref = np.array([vocab.setdefault(t, len(vocab)) for t in reference])
    hyp = [vocab.setdefault(t, len(vocab)) for t in hypothesis]
    cols = np.arange(len(ref) + 1)
    prev = cols.copy()
    for i, token in enumerate(hyp, start=1):
        tmp = np.empty_like(prev)
        tmp[0] = i
        # Deletion of the hypothesis token (prev[j] + 1) or match / substitution.
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (ref != token))
        # Insertion, cur[j] = cur[j - 1] + 1, as a running minimum of (tmp[k] - k) + j: no loop.
        prev = np.minimum.accumulate(tmp - cols) + cols
    return int(prev[-1])


def wer_tokens(text: str) -> list[str]:
    """Whitespace-separated words (jiwer's default WER tokenisation, for space-separated text)."""
    return text.split()


def cer_tokens(text: str) -> list[str]:
    """jiwer's default CER tokenisation: the characters of the stripped text, spaces included."""
    return list(text.strip())


def error_rate(hypothesis: Sequence[Hashable], reference: Sequence[Hashable]) -> float:
    """Edit distance / reference length (can exceed 1); an empty reference gives len(hypothesis)."""
    return edit_distance(hypothesis, reference) / max(len(reference), 1)


def word_error_rate(hypothesis: str, reference: str) -> float:
    """Sentence WER as a fraction (0 = identical)."""
    return error_rate(wer_tokens(hypothesis), wer_tokens(reference))


def char_error_rate(hypothesis: str, reference: str) -> float:
    """Sentence CER as a fraction (0 = identical)."""
    return error_rate(cer_tokens(hypothesis), cer_tokens(reference))


def corpus_word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER as a fraction: total word edits over total reference words (jiwer's `wer`)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    edits = sum(edit_distance(wer_tokens(h), wer_tokens(r))
                for h, r in zip(hypotheses, references, strict=True))
    return edits / max(sum(len(wer_tokens(r)) for r in references), 1)
