"""The MMAU matching rule on edge cases, and per-category accuracy by hand."""

import pytest

from sallm_jax.metrics.mmau import correct_choice, mmau_accuracy, mmau_correct, mmau_match

CHOICES = ["Dog barking", "Cat meowing", "Dog growling", "Silence"]


def test_rule_edge_cases():
    assert mmau_match("dog barking", "Dog barking", CHOICES)
    assert mmau_match("The answer is: DOG BARKING.", "Dog barking", CHOICES)  # case, extra words
    assert mmau_match("barking dog", "Dog barking", CHOICES)  # order does not matter
    # "dog" is shared with a wrong choice, so it is allowed; "growling" belongs only to one.
    assert not mmau_match("dog barking or growling", "Dog barking", CHOICES)
    assert not mmau_match("barking", "Dog barking", CHOICES)  # a token of the answer missing
    assert not mmau_match("dog", "Dog barking", CHOICES)
    assert not mmau_match("", "Dog barking", CHOICES)
    assert not mmau_match("...", "Silence", CHOICES)  # no word tokens at all
    # A wrong choice with the same tokens as the right one adds no forbidden tokens.
    assert mmau_match("b a", "a b", ["a b", "B A", "c"])


def test_correct_uses_answer_tag_when_present():
    ex = {"answer": "Dog barking", "choices": CHOICES, "answer_index": 0}
    # The reasoning outside the tag mentions a wrong choice; only the tag content counts.
    assert mmau_correct("Not a cat meowing. <answer> dog barking </answer>", ex)
    assert mmau_correct("it is a dog barking", ex)  # no tag: the whole text
    assert not mmau_correct("<answer>cat meowing</answer> <answer>dog barking</answer>", ex)
    assert correct_choice({"answer": "x", "choices": ["p", "q"], "answer_index": 1}) == "q"
    assert correct_choice({"answer": "x"}) == "x"


def test_accuracy_per_category():
    def ex(category, answer="yes"):
        return {"answer": answer, "choices": ["yes", "no"], "answer_index": None,
                "meta": {"category": category}}

    examples = [ex("sound"), ex("sound"), ex("music"), ex("music"), ex("music"),
                {"answer": "yes", "choices": ["yes", "no"], "meta": {}}]
    predictions = ["yes", "no", "yes", "yes", "no", "yes"]
    got = mmau_accuracy(predictions, examples)
    # sound 1/2, music 2/3, no speech examples; overall 4/6 includes the uncategorised one.
    assert got == pytest.approx({"sound": 50.0, "music": 200 / 3, "overall": 400 / 6})
    with pytest.raises(ValueError):
        mmau_accuracy(["yes"], [])
