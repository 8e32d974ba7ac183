"""How concentrated a policy's sampled answers are, from a sampled evaluation's predictions.jsonl.

Over questions: distinct_draws (mean number of distinct answers among a question's draws),
modal_share (mean share of its draws giving its most frequent answer), short_answers (share of
draws of <= `SHORT_WORDS` words) and short_references (the same among the references).

  python -m sallm_jax.eval.draw_spread RUN/eval/grpo/test/predictions.jsonl [...]"""

from __future__ import annotations

import collections
import json
import pathlib
import sys

SHORT_WORDS = 3


def draw_spread(records: list[dict]) -> dict[str, float]:
    """The statistics above of `records` (each with "draws" and "reference"); ValueError if none."""
    if not records or any("draws" not in r for r in records):
        raise ValueError("draw_spread: every record needs its 'draws' (a sampled evaluation)")
    counts = [collections.Counter(r["draws"]) for r in records]
    draws = [d for r in records for d in r["draws"]]
    return {
        "questions": len(records),
        "distinct_draws": sum(len(c) for c in counts) / len(records),
        "modal_share": sum(max(c.values()) / sum(c.values()) for c in counts) / len(records),
        "short_answers": sum(len(d.split()) <= SHORT_WORDS for d in draws) / len(draws),
        "short_references": sum(len(r["reference"].split()) <= SHORT_WORDS
                                for r in records) / len(records),
    }


def read_predictions(path: pathlib.Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(paths: list[str]) -> None:
    for path in paths:
        stats = draw_spread(read_predictions(pathlib.Path(path)))
        print(path, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in stats.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
