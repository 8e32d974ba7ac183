"""Text rewards against sacrebleu, rouge-score, jiwer and hand-computed values; the registry,
import-path rewards and failure handling of `compute_rewards`."""

import logging
import random

import jiwer
import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from sallm_jax.rl.rewards import (
    REWARD_FNS,
    RewardFailing,
    Rewards,
    RewardWatch,
    compute_rewards,
    get_reward_fns,
    make_bleu_reward,
    make_chrf_reward,
    register_reward,
)

_VOCAB = ["The", "cat", "sat", "on", "the", "mat.", "a", "dog,", "Über", "2", "ran"]


def _pairs(seed: int, n: int = 100) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def sentence(lo: int) -> str:
        return " ".join(rng.choice(_VOCAB) for _ in range(rng.randint(lo, 12)))

    return [(sentence(0), sentence(1)) for _ in range(n)]


def test_bleu_reward_hand_computed():
    bleu = REWARD_FNS["bleu"]
    # Clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    got = bleu("the cat sat on the mat", {"answer": "the cat sat on a mat"})
    assert got == pytest.approx(expected, abs=1e-4)
    answer = {"answer": "Maria went to the library."}
    assert bleu("  Maria went to the library.", answer) == pytest.approx(1.0)
    assert bleu("blue", {"answer": "Maria went to the library."}) == 0.0


def test_bleu_factory_options_match_sacrebleu():
    options = {"tokenize": "char", "smooth_method": "floor", "smooth_value": 0.2,
               "lowercase": True}
    custom = make_bleu_reward(**options)
    for hyp, ref in _pairs(0):
        want = sacrebleu.sentence_bleu(hyp.strip(), [ref], tokenize="char",
                                       smooth_method="floor", smooth_value=0.2, lowercase=True)
        assert custom(hyp, {"answer": ref}) == pytest.approx(want.score / 100, abs=1e-12)
        default = sacrebleu.sentence_bleu(hyp.strip(), [ref]).score / 100
        assert REWARD_FNS["bleu"](hyp, {"answer": ref}) == pytest.approx(default, abs=1e-12)
    with pytest.raises(ValueError, match="tokenize"):
        make_bleu_reward(tokenize="nope")
    with pytest.raises(ValueError, match="smooth_method"):
        make_bleu_reward(smooth_method="nope")


def test_chrf_matches_sacrebleu():
    chrf_pp = make_chrf_reward(word_order=2)
    for hyp, ref in _pairs(1):
        want = sacrebleu.sentence_chrf(hyp.strip(), [ref]).score / 100
        assert REWARD_FNS["chrf"](hyp, {"answer": ref}) == pytest.approx(want, abs=1e-12)
        want_pp = sacrebleu.sentence_chrf(hyp.strip(), [ref], word_order=2).score / 100
        assert chrf_pp(hyp, {"answer": ref}) == pytest.approx(want_pp, abs=1e-12)


def test_rouge_rewards_match_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for hyp, ref in _pairs(2):
        want = scorer.score(ref, hyp)
        for name, theirs in (("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")):
            got = REWARD_FNS[name](hyp, {"answer": ref})
            assert got == pytest.approx(want[theirs].fmeasure, abs=1e-12), (name, hyp, ref)


def test_error_rate_rewards_match_jiwer():
    pairs = _pairs(3)
    assert any(not hyp for hyp, _ in pairs)  # empty completions are among the cases
    for hyp, ref in pairs:
        ex = {"answer": ref}
        assert REWARD_FNS["wer"](hyp, ex) == pytest.approx(1 - min(jiwer.wer(ref, hyp), 1))
        assert REWARD_FNS["cer"](hyp, ex) == pytest.approx(1 - min(jiwer.cer(ref, hyp), 1))
    # Hand-computed: one substitution in four words; many insertions cap at reward 0.
    assert REWARD_FNS["wer"]("a b c x", {"answer": "a b c d"}) == pytest.approx(0.75)
    assert REWARD_FNS["wer"]("a b c d e f g h i", {"answer": "a"}) == 0.0


def test_meteor_reward_hand_computed():
    # m = 4, P = 1, R = 2/3, 2 chunks: Fmean 20/29, penalty 0.5 (2/4)^3 -> 75/116.
    assert REWARD_FNS["meteor"]("a b c d", {"answer": "a b x c d e"}) == pytest.approx(75 / 116)


def test_registered_rewards_stay_in_unit_interval():
    ex = {"answer": "Dog barking", "choices": ["Dog barking", "Cat"], "answer_index": 0}
    for name, fn in REWARD_FNS.items():
        for completion in ["", "dog", "<answer>Dog barking</answer>", "x " * 300]:
            assert 0.0 <= fn(completion, ex) <= 1.0, (name, completion)


def test_compute_rewards_weights_and_shapes():
    fns = get_reward_fns(["bleu", "bleu"])
    total, per_fn, failures, _ = compute_rewards(fns, [1.0, 0.5], ["a b c d", "x"],
                                                 [{"answer": "a b c d"}, {"answer": "a b c d"}])
    np.testing.assert_allclose(per_fn, [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(total, [1.5, 0.0])
    assert failures == {"bleu": 0, "bleu#2": 0}
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_fns(["meteorite"])
    with pytest.raises(ValueError, match="reward_weights"):
        compute_rewards(fns, [1.0], ["a"], [{"answer": "a"}])
    with pytest.raises(ValueError, match="already registered"):
        register_reward("bleu")(lambda c, e: 0.0)


def test_import_path_rewards(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(completion, example):\n"
        "    return len(completion) / 10\n"
        "class Holder:\n"
        "    @staticmethod\n"
        "    def one(completion, example):\n"
        "        return 1.0\n"
        "NOT_A_FUNCTION = 3\n"
        "def one_argument(completion):\n"
        "    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fns = get_reward_fns(["my_rewards:length", "bleu", "my_rewards:Holder.one"])
    scored = compute_rewards(fns, [1.0, 0.0, 2.0], ["abcde"], [{"answer": "z"}])
    np.testing.assert_allclose(scored.per_fn, [[0.5, 0.0, 1.0]])
    np.testing.assert_allclose(scored.total, [2.5])
    assert set(scored.failures) == {"my_rewards:length", "bleu", "my_rewards:Holder.one"}
    with pytest.raises(ValueError, match=r"grpo\.reward_fns.*cannot import module 'no_such_mod'"):
        get_reward_fns(["no_such_mod:f"])
    with pytest.raises(ValueError, match=r"grpo\.reward_fns.*no attribute 'missing'"):
        get_reward_fns(["my_rewards:missing"])
    with pytest.raises(ValueError, match=r"grpo\.reward_fns.*expected a function"):
        get_reward_fns(["my_rewards:NOT_A_FUNCTION"])
    with pytest.raises(ValueError, match=r"grpo\.reward_fns.*not an import path"):
        get_reward_fns(["my_rewards:"])
    with pytest.raises(ValueError, match=r"one_argument' cannot be called as fn\(completion, ex"):
        get_reward_fns(["my_rewards:one_argument"])


def test_reward_watch_stops_a_reward_failing_on_every_sample_for_k_steps():
    def broken(completion, example):
        return example["no_such_field"]

    watch = RewardWatch(fraction=1.0, steps=3)
    for step in (1, 2):
        scored = compute_rewards([broken], [1.0], ["a", "b"], [{}, {}], names=["broken"])
        watch.after_step(step, scored.failures, 2, scored.first_errors)
    watch.after_step(3, {"broken": 1}, 2, {})  # fails on only one of two: the count restarts
    for step in (4, 5):
        watch.after_step(step, scored.failures, 2, scored.first_errors)
    with pytest.raises(RewardFailing, match=r"(?s)step 6: reward broken failed on 2 of 2 "
                                            r"samples, 3 steps in a row.*KeyError"):
        watch.after_step(6, scored.failures, 2, scored.first_errors)


def test_failures_are_counted_and_logged_once(caplog):
    def flaky(completion, example):
        if completion.startswith("boom"):
            raise RuntimeError(f"cannot score {completion}")
        return 1.0

    def not_finite(completion, example):
        return float("nan") if completion == "ok" else 0.5

    completions = ["boom 1", "ok", "boom 2", "fine"]
    examples = [{"answer": "ok"}] * 4
    with caplog.at_level(logging.WARNING, logger="sallm_jax.rl.rewards"):
        scored = compute_rewards([flaky, not_finite, REWARD_FNS["bleu"]], [1.0, 1.0, 0.0],
                                 completions, examples, failure_value=-1.0,
                                 names=["flaky", "nan", "bleu"])
    assert isinstance(scored, Rewards)
    np.testing.assert_allclose(scored.per_fn[:, :2], [[-1, 0.5], [1, -1], [-1, 0.5], [1, 0.5]])
    np.testing.assert_allclose(scored.total, [-0.5, 0.0, -0.5, 1.5])
    assert scored.failures == {"flaky": 2, "nan": 1, "bleu": 0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per failing function, not once per sample
    assert "flaky failed on 2 of 4" in warnings[0].getMessage()
    assert "cannot score boom 1" in caplog.text  # the first exception, with its traceback
    # Without names, the failures dict uses the function's import path.
    default_names = compute_rewards([flaky], [1.0], ["boom"], [{"answer": "x"}]).failures
    assert default_names == {f"{__name__}:{flaky.__qualname__}": 1}
