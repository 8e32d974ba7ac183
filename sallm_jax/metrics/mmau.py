"""The MMAU benchmark's answer-matching rule and per-category accuracy."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_WORD = re.compile(r"\b\w+\b")
# Non-greedy and DOTALL: the content of the first tag pair, which may span lines.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
CATEGORIES = ("sound", "music", "speech")


def mmau_tokens(text: str) -> set[str]:
    """Lower-cased word tokens of `text`, as a set."""
    return set(_WORD.findall(text.lower()))


def mmau_match(prediction: str, answer: str, choices: Sequence[str]) -> bool:
    """The official MMAU rule (`string_match` in `evaluation.py`) over `mmau_tokens` sets.

    True iff `prediction` has tokens, all of `answer`'s, and none found only in a wrong choice.
    """
    predicted, correct = mmau_tokens(prediction), mmau_tokens(answer)
    if not predicted:
        return False
    wrong: set[str] = set()
    for choice in choices:
        tokens = mmau_tokens(choice)
        if tokens != correct:
            wrong |= tokens - correct
    return correct <= predicted and predicted.isdisjoint(wrong)


def first_answer_tag(text: str) -> str | None:
    """The text inside the first `<answer>...</answer>` pair (unstripped), or None without one."""
    found = _ANSWER_TAG.search(text)
    return None if found is None else found.group(1)


def correct_choice(example: Mapping[str, Any]) -> str:
    """The right answer: choices[answer_index] when both are given, else example["answer"]."""
    choices, index = example.get("choices"), example.get("answer_index")
    if choices and index is not None:
        return choices[index]
    return example["answer"]


def mmau_correct(completion: str, example: Mapping[str, Any]) -> bool:
    """`mmau_match` on the first answer tag's content, else the whole text; no choices: [answer]."""
    tagged = first_answer_tag(completion)
    prediction = completion if tagged is None else tagged
    choices = example.get("choices") or [correct_choice(example)]
    return mmau_match(prediction, correct_choice(example), choices)


def mmau_accuracy(predictions: Sequence[str],
                  examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`mmau_correct` accuracy in percent per example["meta"]["category"] seen, and "overall".

    "overall" counts every example. Raises ValueError on unequal lengths or no predictions.
    """
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not predictions:
        raise ValueError("no predictions to score")
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    hits = 0
    for prediction, example in zip(predictions, examples, strict=True):
        hit = mmau_correct(prediction, example)
        hits += hit
        category = (example.get("meta") or {}).get("category")
        if category is not None:
            total[category] = total.get(category, 0) + 1
            correct[category] = correct.get(category, 0) + hit
    result = {c: 100.0 * correct[c] / total[c] for c in sorted(total)}
    result["overall"] = 100.0 * hits / len(predictions)
    return result
