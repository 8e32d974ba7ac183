"""R1-AQA accuracy and format rewards, and the MMAU reward, on edge cases (hand-decided)."""

import pytest

from sallm_jax.rl.rewards import REWARD_FNS, compute_rewards, get_reward_fns

EX = {"answer": "Dog barking", "choices": ["Dog barking", "Cat meowing", "Dog growling"],
      "answer_index": 0}


@pytest.mark.parametrize("completion, expected", [
    ("<answer>Dog barking</answer>", 1.0),
    ("<answer>  Dog barking \n</answer>", 1.0),  # stripped inside the tag
    ("I think so. <answer>Dog barking</answer> done", 1.0),  # text around the tag is ignored
    ("<answer>\nDog barking\n</answer>", 1.0),  # content may span lines
    ("<answer>dog barking</answer>", 0.0),  # exact, case-sensitive
    ("<answer>Dog  barking</answer>", 0.0),  # inner whitespace is not normalised
    ("<answer>Cat meowing</answer><answer>Dog barking</answer>", 0.0),  # the FIRST tag counts
    ("<answer>Dog barking</answer><answer>Cat meowing</answer>", 1.0),
    ("Dog barking", 0.0),  # no tag
    ("<answer>Dog barking", 0.0),  # unclosed tag
])
def test_accuracy(completion, expected):
    assert REWARD_FNS["accuracy"](completion, EX) == expected


def test_accuracy_prefers_answer_index():
    ex = {"answer": "ignored", "choices": ["a", "b"], "answer_index": 1}
    assert REWARD_FNS["accuracy"]("<answer>b</answer>", ex) == 1.0
    assert REWARD_FNS["accuracy"]("<answer> x </answer>", {"answer": " x"}) == 1.0


@pytest.mark.parametrize("completion, expected", [
    ("<answer>Dog barking</answer>", 1.0),
    ("<answer></answer>", 1.0),
    ("<answer>line one\nline two</answer>", 1.0),  # DOTALL
    ("<answer>a</answer><answer>b</answer>", 1.0),  # .*? may run over the first closing tag
    (" <answer>Dog barking</answer>", 0.0),  # fullmatch: nothing outside the tags
    ("<answer>Dog barking</answer>\n", 0.0),
    ("Reasoning. <answer>Dog barking</answer>", 0.0),
    ("Dog barking", 0.0),
])
def test_format(completion, expected):
    assert REWARD_FNS["format"](completion, EX) == expected


@pytest.mark.parametrize("completion, expected", [
    ("<answer>dog BARKING.</answer>", 1.0),  # case and punctuation do not matter
    ("The dog is barking", 1.0),  # no tag: the whole completion
    ("Not growling. <answer>Dog barking</answer>", 1.0),  # only the tag's content is judged
    ("<answer>Dog barking or growling</answer>", 0.0),  # "growling" is only in a wrong choice
    ("<answer>Dog</answer>", 0.0),  # "barking" missing
    ("<answer></answer> dog barking", 0.0),  # an empty first tag has no tokens
])
def test_mmau_reward(completion, expected):
    assert REWARD_FNS["mmau"](completion, EX) == expected


def test_r1_aqa_total_reward_range():
    fns = get_reward_fns(["accuracy", "format"])
    completions = ["<answer>Dog barking</answer>", "x <answer>Dog barking</answer>",
                   "<answer>Cat meowing</answer>", "nothing"]
    total, _, failures, _ = compute_rewards(fns, [1.0, 1.0], completions, [EX] * 4)
    assert total.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert failures == {"accuracy": 0, "format": 0}
