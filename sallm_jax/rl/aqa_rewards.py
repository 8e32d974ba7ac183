"""R1-AQA rewards for multiple-choice audio QA: answer accuracy, answer format, MMAU match.

The completion is expected to be `<answer>{one of the choices}</answer>`; accuracy + format
(each 0 or 1) is the R1-AQA reward. Registered in `sallm_jax.rl.rewards` as "accuracy",
"format" and "mmau".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sallm_jax.metrics.mmau import correct_choice, first_answer_tag, mmau_correct

_FORMAT = re.compile(r"<answer>.*?</answer>", re.DOTALL)


def accuracy_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the stripped text inside the FIRST answer tag equals the correct choice, stripped.

    Two deliberate differences from the public R1-AQA code: there, a completion without a tag
    is compared as a whole (so a bare "choice" scores 1); here it scores 0, since the task asks
    for the tag. And here the tag's content may span lines (DOTALL), so that
    "<answer>\\nchoice\\n</answer>" counts.
    """
    tagged = first_answer_tag(completion)
    return float(tagged is not None and tagged.strip() == correct_choice(example).strip())


def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the WHOLE completion matches `<answer>.*?</answer>` (DOTALL, `re.fullmatch`).

    Anything before the first tag or after the last one (even whitespace) scores 0; a completion
    with two tag pairs still matches, because `.*?` may extend over the first `</answer>`.
    """
    del example  # the format does not depend on the example
    return float(_FORMAT.fullmatch(completion) is not None)


def mmau_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 if the MMAU rule (see `sallm_jax.metrics.mmau`) accepts the completion's answer."""
    return float(mmau_correct(completion, example))
