"""METEOR with the exact-match module only (Banerjee & Lavie, 2005), no stemming, no WordNet.

Why a re-implementation: nltk's `meteor_score` loads WordNet, which needs a network download at
run time. This version keeps only the "exact" matching stage, so it runs offline and
deterministically:

1. Tokens: the text lower-cased, split into runs of word characters (Unicode `\\w+`, so German
   umlauts and ß stay inside words) and single punctuation marks, roughly what nltk's
   `word_tokenize` gives.
2. Alignment: a hypothesis token maps to at most one identical reference token, so the number of
   matches m is the sum over word types of min(count in hypothesis, count in reference). When a
   word repeats, occurrences are paired from the right: the last hypothesis occurrence with the
   last reference occurrence, and so on. This is exactly nltk's exact stage; pairings within a
   word type never cross, but the paper's tie-break (among maximal alignments, the one with the
   fewest crossings) is not searched for across word types.
3. Score: P = m / len(hypothesis), R = m / len(reference),
   Fmean = P R / (alpha P + (1 - alpha) R)  (alpha = 0.9 gives the paper's 10 P R / (R + 9 P)),
   chunks = number of runs of matches adjacent in both hypothesis and reference,
   penalty = gamma (chunks / m) ** beta (gamma = 0.5, beta = 3), METEOR = Fmean (1 - penalty);
   0 when m = 0.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

_METEOR_TOKEN = re.compile(r"\w+|[^\w\s]")


def meteor_tokens(text: str) -> list[str]:
    """Lower-cased word runs and single punctuation marks."""
    return _METEOR_TOKEN.findall(text.lower())


def exact_alignment(hypothesis: Sequence[str], reference: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs (hypothesis index, reference index) of identical tokens, sorted by hypothesis index."""
    positions: dict[str, list[int]] = defaultdict(list)
    for j, token in enumerate(reference):
        positions[token].append(j)
    pairs = []
    for i in range(len(hypothesis) - 1, -1, -1):
        free = positions.get(hypothesis[i])
        if free:
            pairs.append((i, free.pop()))
    return pairs[::-1]


def count_chunks(alignment: Sequence[tuple[int, int]]) -> int:
    """Runs of consecutive pairs whose indices both advance by one."""
    if not alignment:
        return 0
    return 1 + sum(1 for (i0, j0), (i1, j1) in zip(alignment, alignment[1:], strict=False)
                   if not (i1 == i0 + 1 and j1 == j0 + 1))


def meteor_from_tokens(hypothesis: Sequence[str], reference: Sequence[str], *,
                       alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """METEOR of pre-tokenised text, in [0, 1]."""
    alignment = exact_alignment(hypothesis, reference)
    matches = len(alignment)
    if matches == 0:
        return 0.0
    precision, recall = matches / len(hypothesis), matches / len(reference)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (count_chunks(alignment) / matches) ** beta
    return fmean * (1 - penalty)


def meteor(prediction: str, reference: str, *, alpha: float = 0.9, beta: float = 3.0,
           gamma: float = 0.5) -> float:
    """Sentence METEOR (exact matches only) of `prediction` against one reference, in [0, 1]."""
    return meteor_from_tokens(meteor_tokens(prediction), meteor_tokens(reference), alpha=alpha,
                              beta=beta, gamma=gamma)
