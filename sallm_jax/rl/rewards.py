"""Reward functions by name (`grpo.reward_fns`: registered or "package.module:function").

A reward is `fn(completion, example) -> float | None` (None: not applicable), sync or async; the
example holds "answer" (multiple choice: "choices", "answer_index" too)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import inspect
import logging
import math
import numbers
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from sallm_jax.metrics.edit_distance import char_error_rate, word_error_rate
from sallm_jax.metrics.meteor import meteor
from sallm_jax.metrics.text import rouge_l, rouge_n
from sallm_jax.rl.aqa_rewards import accuracy_reward, format_reward, mmau_reward
from sallm_jax.runtime.long_text import shorten

RewardFn = Callable[[str, Mapping[str, Any]], float | None]
REWARD_FNS: dict[str, RewardFn] = {}
_LOG = logging.getLogger(__name__)


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator that adds a reward function to the registry under `name`."""

    def wrap(fn: RewardFn) -> RewardFn:
        if name in REWARD_FNS:
            raise ValueError(f"reward {name!r} is already registered")
        if ":" in name:
            raise ValueError(f"reward name {name!r} must not contain ':' (reserved for import "
                             "paths)")
        REWARD_FNS[name] = fn
        return fn

    return wrap


# ---- Text similarity to the reference answer, each in [0, 1]. ----

def make_bleu_reward(tokenize: str = "13a", smooth_method: str = "exp",
                     smooth_value: float | None = None, lowercase: bool = False) -> RewardFn:
    """Sentence BLEU / 100 (defaults: `sacrebleu.sentence_bleu`'s); ValueError on a bad option."""
    # sacrebleu reports bad options as a bare KeyError / AssertionError; say what is allowed.
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"BLEU reward: tokenize={tokenize!r}, expected one of "
                         f"{list(BLEU.TOKENIZERS)}")
    if smooth_method not in BLEU.SMOOTH_DEFAULTS:
        raise ValueError(f"BLEU reward: smooth_method={smooth_method!r}, expected one of "
                         f"{list(BLEU.SMOOTH_DEFAULTS)}")
    metric = BLEU(tokenize=tokenize, smooth_method=smooth_method, smooth_value=smooth_value,
                  lowercase=lowercase, effective_order=True)

    def bleu_reward(completion: str, example: Mapping[str, Any]) -> float:
        return metric.sentence_score(completion.strip(), [example["answer"]]).score / 100.0

    return bleu_reward


def make_chrf_reward(char_order: int = 6, word_order: int = 0, beta: int = 2) -> RewardFn:
    """Sentence chrF / 100 (sacrebleu; defaults as `sentence_chrf`, word_order=2 is chrF++)."""
    metric = CHRF(char_order=char_order, word_order=word_order, beta=beta)

    def chrf_reward(completion: str, example: Mapping[str, Any]) -> float:
        return metric.sentence_score(completion.strip(), [example["answer"]]).score / 100.0

    return chrf_reward


bleu_reward = register_reward("bleu")(make_bleu_reward())
chrf_reward = register_reward("chrf")(make_chrf_reward())


@register_reward("rouge1")
def rouge1_reward(completion: str, example: Mapping[str, Any]) -> float:
    """ROUGE-1 F1 (rouge-score tokenisation, no stemming)."""
    return rouge_n(completion, example["answer"], 1)


@register_reward("rouge2")
def rouge2_reward(completion: str, example: Mapping[str, Any]) -> float:
    """ROUGE-2 F1 (rouge-score tokenisation, no stemming)."""
    return rouge_n(completion, example["answer"], 2)


@register_reward("rouge_l")
def rouge_l_reward(completion: str, example: Mapping[str, Any]) -> float:
    """ROUGE-L F1 (rouge-score tokenisation, no stemming)."""
    return rouge_l(completion, example["answer"])


@register_reward("meteor")
def meteor_reward(completion: str, example: Mapping[str, Any]) -> float:
    """METEOR with exact matches only (see `sallm_jax.metrics.meteor`)."""
    return meteor(completion, example["answer"])


# Error rates are unbounded above (insertions); capping at 1 keeps the reward in [0, 1] so that
# one rambling sample cannot dominate a group's standard deviation.
@register_reward("wer")
def wer_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 - min(WER, 1), WER over whitespace-separated words (case and punctuation kept)."""
    return 1.0 - min(word_error_rate(completion, example["answer"]), 1.0)


@register_reward("cer")
def cer_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1 - min(CER, 1), CER over the characters of the stripped text, spaces included."""
    return 1.0 - min(char_error_rate(completion, example["answer"]), 1.0)


# ---- Multiple-choice rewards (R1-AQA), defined beside their answer-tag rules. ----
register_reward("accuracy")(accuracy_reward)
register_reward("format")(format_reward)
register_reward("mmau")(mmau_reward)


# ---- Lookup and scoring. ----

def _import_reward(path: str) -> RewardFn:
    """Import "package.module:function" (the function may be a dotted attribute path)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"grpo.reward_fns: {path!r} is not an import path; expected "
                         "'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user module may fail with anything, e.g. a SyntaxError
        raise ValueError(f"grpo.reward_fns: cannot import module {module_name!r} for reward "
                         f"{path!r}: {type(err).__name__}: {err}") from err
    try:
        fn = functools.reduce(getattr, attr.split("."), module)
    except AttributeError as err:
        raise ValueError(f"grpo.reward_fns: module {module_name!r} has no attribute {attr!r} "
                         f"(reward {path!r})") from err
    if not callable(fn):
        raise ValueError(f"grpo.reward_fns: {path!r} is a {type(fn).__name__}, expected a "
                         "function fn(completion: str, example: Mapping) -> float")
    try:
        inspect.signature(fn).bind("", {})
    except TypeError as err:
        raise ValueError(f"grpo.reward_fns: {path!r} cannot be called as fn(completion, example) "
                         f"({err}); expected fn(completion: str, example: Mapping) -> float"
                         ) from err
    except ValueError:
        pass  # no signature to read (some builtins): the first call will tell
    return fn


def get_reward_fns(names: Sequence[str]) -> list[RewardFn]:
    """Reward functions by registered name or "module:function"; ValueError names the bad one."""
    unknown = [n for n in names if ":" not in n and n not in REWARD_FNS]
    if unknown:
        raise ValueError(f"grpo.reward_fns: unknown reward(s) {unknown}; registered: "
                         f"{sorted(REWARD_FNS)}, or give 'package.module:function'")
    return [_import_reward(n) if ":" in n else REWARD_FNS[n] for n in names]


def reward_name(fn: RewardFn) -> str:
    """The registry name of `fn`, else its import path "module:qualname"."""
    for name, registered in REWARD_FNS.items():
        if registered is fn:
            return name
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


class Rewards(NamedTuple):
    """What `compute_rewards` returns."""

    total: np.ndarray  # [N] float32, weighted sum over the functions that apply
    per_fn: np.ndarray  # [N, F] float32, one column per reward function; NaN: not applicable
    failures: dict[str, int]  # reward name -> samples on which it raised (0 included)
    first_errors: dict[str, BaseException]  # reward name -> its first error, when it failed


def _run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Await the coroutines of `calls` together; each result is a value or its exception."""

    async def gather():
        async def one(call):
            return await call()  # a raise inside call() itself is caught by gather too

        return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)

    try:
        asyncio.get_running_loop()
        inside_a_loop = True
    except RuntimeError:
        inside_a_loop = False
    if not inside_a_loop:  # outside the except block: no stray context on reward errors
        return asyncio.run(gather())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, gather()).result()


def _is_real_number(value: Any) -> bool:
    """A Python or NumPy real number (bool included), or a 0-d array of one."""
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and dtype is not None and np.dtype(
        dtype).kind in "biuf"


def _as_reward(value: Any) -> float | None:
    """A reward's value as a finite float or None; raises otherwise (numeric strings too)."""
    if value is None:
        return None
    if not _is_real_number(value):
        raise TypeError(f"returned a {type(value).__name__} ({shorten(repr(value))}), expected "
                        "a real number or None")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"reward is {value}")
    return value


def compute_rewards(
    reward_fns: Sequence[RewardFn],
    weights: Sequence[float],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    *,
    failure_value: float = 0.0,
    names: Sequence[str] | None = None,
) -> Rewards:
    """Score every completion with every reward: Rewards(total [N], per_fn [N, F], ...).

    F `reward_fns` (async ones awaited together) with their `weights`; N `completions`, `examples`.
    A raise, or a value not a finite number or None, scores `failure_value` (a NaN would spread to
    the group's advantages), counted per function and logged with the first traceback. None: NaN in
    `per_fn`, out of `total`. `names` default to registry names or import paths, "#k" on repeats."""
    if len(weights) != len(reward_fns):
        raise ValueError(f"grpo.reward_weights has {len(weights)} entries for "
                         f"{len(reward_fns)} reward functions")
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
    if names is None:
        names = _unique([reward_name(fn) for fn in reward_fns])
    elif len(names) != len(reward_fns):
        raise ValueError(f"{len(names)} names for {len(reward_fns)} reward functions")
    pairs = list(zip(completions, examples, strict=True))
    is_async = [inspect.iscoroutinefunction(fn) for fn in reward_fns]
    awaited = iter(_run_together([functools.partial(fn, c, e)
                                  for fn, a in zip(reward_fns, is_async, strict=True) if a
                                  for c, e in pairs]))
    per_fn = np.full((len(completions), len(reward_fns)), failure_value, np.float32)
    failures: dict[str, int] = {}
    first_errors: dict[str, BaseException] = {}
    for k, (fn, name) in enumerate(zip(reward_fns, names, strict=True)):
        first_error: BaseException | None = None
        count = 0
        for n, (completion, example) in enumerate(pairs):
            try:
                if is_async[k]:
                    result = next(awaited)
                    if isinstance(result, BaseException):
                        raise result
                else:
                    result = fn(completion, example)
                value = _as_reward(result)
            except Exception as err:  # any bug in a reward must not end the run
                count += 1
                if first_error is None:
                    first_error = err
                continue
            per_fn[n, k] = np.nan if value is None else value
        failures[name] = count
        if first_error is not None:
            first_errors[name] = first_error
            _LOG.warning("reward %s failed on %d of %d completions, scored %s; first error:",
                         name, count, len(completions), failure_value, exc_info=first_error)
    # Zero-filling the inapplicable entries leaves the matmul, and so the total, bit for bit
    # what it is when every reward applies.
    total = np.where(np.isnan(per_fn), 0.0, per_fn).astype(np.float32) @ np.asarray(
        weights, np.float32)
    return Rewards(total, per_fn, failures, first_errors)


def _unique(names: list[str]) -> list[str]:
    """Append "#k" to the k-th repeat of a name (k = 2, 3, ...)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


class RewardWatch:
    """Raises RewardFailing when a reward fails >= `fraction` of samples `steps` steps in a row.

    `fraction`, `steps`: grpo.reward_failure_stop_fraction, grpo.reward_failure_stop_steps."""

    def __init__(self, fraction: float, steps: int):
        self.fraction, self.steps = fraction, steps
        self.in_a_row: dict[str, int] = {}

    def after_step(self, step: int, failures: Mapping[str, int], num_samples: int,
                   first_errors: Mapping[str, BaseException]) -> None:
        """Count this step's `failures` (per reward, all processes) out of `num_samples`."""
        for name, count in failures.items():
            failing = count > 0 and count >= self.fraction * num_samples
            self.in_a_row[name] = self.in_a_row.get(name, 0) + 1 if failing else 0
            if self.in_a_row[name] >= self.steps:
                error = first_errors.get(name)
                shown = ("".join(traceback.format_exception(error)) if error is not None
                         else "(raised on another process; see its log)")
                raise RewardFailing(
                    f"[grpo] step {step}: reward {name} failed on {count} of {num_samples} "
                    f"samples, {self.in_a_row[name]} steps in a row "
                    f"(grpo.reward_failure_stop_fraction={self.fraction}, "
                    f"grpo.reward_failure_stop_steps={self.steps}); its first error:\n{shown}")


class RewardFailing(RuntimeError):
    """A reward function failed on too many samples for too many steps."""
