"""METEOR, exact-match stage only (Banerjee & Lavie, 2005): no stemming, no WordNet, offline.

Tokens: lower-cased Unicode `\\w+` runs and single punctuation marks (about nltk's
`word_tokenize`). Alignment: nltk's exact stage, each token matched at most once, repeats paired
from the right; the paper's fewest-crossings tie-break across word types is not searched.
Score: P = m / len(hypothesis), R = m / len(reference), Fmean = P R / (alpha P + (1 - alpha) R)
(alpha = 0.9: the paper's 10 P R / (R + 9 P)), penalty = gamma (chunks / m) ** beta (gamma = 0.5,
beta = 3), METEOR = Fmean (1 - penalty), 0 when m = 0; chunks: runs adjacent in both texts.
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
