"""R1-AQA rewards (accuracy + format) for multiple-choice audio QA, and the MMAU match."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sallm_jax.metrics.mmau import correct_choice, first_answer_tag, mmau_correct

_FORMAT = re.compile(r"<answer>.*?</answer>", re.DOTALL)


def accuracy_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the stripped text inside the FIRST answer tag equals the correct choice, stripped.

    Unlike R1-AQA's code, a completion without a tag scores 0; the tag may span lines (DOTALL)."""
    tagged = first_answer_tag(completion)
    return float(tagged is not None and tagged.strip() == correct_choice(example).strip())


def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the WHOLE completion matches `<answer>.*?</answer>` (DOTALL, `re.fullmatch`).

    Text outside the tags, whitespace included, scores 0; two tag pairs still match."""
    del example  # the format does not depend on the example
    return float(_FORMAT.fullmatch(completion) is not None)


def mmau_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the MMAU rule (see `sallm_jax.metrics.mmau`) accepts the completion's answer."""
    return float(mmau_correct(completion, example))
