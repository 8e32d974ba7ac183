"""min-p and the repetition penalty against a NumPy restatement of transformers' logits
processors and against transformers' own, in transformers' order (penalty, temperature, top-k,
top-p, min-p)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.rl.sampling import filter_logits, penalise_repetitions, sample_token, seen_tokens

VOCAB = 12


def numpy_repetition_penalty(logits, rows_of_ids, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor: each token id present in a row's ids
    (once, however often), logit / penalty if positive, else logit * penalty."""
    out = logits.astype(np.float64).copy()
    for b, ids in enumerate(rows_of_ids):
        for token in set(ids):
            x = out[b, token]
            out[b, token] = x * penalty if x < 0 else x / penalty
    return out


def numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_warpers(logits, *, temperature, top_k, top_p, min_p):
    """transformers' TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper and
    MinPLogitsWarper (min_tokens_to_keep 1), in that order; removed entries are -inf."""
    x = logits / temperature
    if top_k:
        kth = np.sort(x, -1)[:, -top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    if top_p < 1.0:
        for b in range(len(x)):
            order = np.argsort(x[b], kind="stable")  # ascending
            cumulative = np.cumsum(numpy_softmax(x[b][order]))
            remove = cumulative <= 1 - top_p
            remove[-1] = False
            x[b, order[remove]] = -np.inf
    if min_p > 0:
        probs = numpy_softmax(x)
        x = np.where(probs < min_p * probs.max(-1, keepdims=True), -np.inf, x)
    return x


def fixed_case():
    """Two left-padded rows of ids (prompt + completion so far, pad 0) and their logits, with
    positive and negative logits on repeated tokens."""
    rng = np.random.default_rng(0)
    ids = np.array([[0, 0, 5, 3, 5, 7], [2, 9, 9, 4, 1, 11]], np.int32)
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int32)
    logits = rng.normal(0, 2, (2, VOCAB)).astype(np.float32)
    logits[0, 5], logits[0, 3], logits[1, 9], logits[1, 4] = 2.5, -1.5, -0.5, 3.0
    return ids, mask, logits


def ours(logits, ids, mask, *, penalty, temperature, top_k, top_p, min_p):
    seen = seen_tokens(jnp.asarray(ids), jnp.asarray(mask), VOCAB)
    x = penalise_repetitions(jnp.asarray(logits), seen, penalty)
    return np.asarray(filter_logits(x / temperature, top_k=top_k, top_p=top_p, min_p=min_p))


def test_repetition_penalty_hand_computed():
    # Row 0 holds 5, 3, 7 (5 twice, penalised once) and padding that is not a token of the row.
    ids, mask, logits = fixed_case()
    got = np.asarray(penalise_repetitions(
        jnp.asarray(logits), seen_tokens(jnp.asarray(ids), jnp.asarray(mask), VOCAB), 2.0))
    assert got[0, 5] == pytest.approx(1.25)
    assert got[0, 3] == pytest.approx(-3.0)
    assert got[1, 9] == pytest.approx(-1.0)
    assert got[1, 4] == pytest.approx(1.5)
    assert got[0, 0] == logits[0, 0]  # the pad id, left padding only in row 0
    assert got[1, 0] == logits[1, 0]
    assert got[0, 9] == logits[0, 9]  # in row 1 only


def test_min_p_hand_computed():
    # probs .5, .3, .15, .05: min_p 0.2 cuts below 0.1 (token 3), min_p 0.5 below 0.25.
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(np.asarray(filter_logits(logits, min_p=0.2))).tolist() == [
        [True, True, True, False]]
    assert np.isfinite(np.asarray(filter_logits(logits, min_p=0.5))).tolist() == [
        [True, True, False, False]]
    # After top-k 2 the kept mass renormalises (.625, .375) but the ratio to the top is the same.
    assert np.isfinite(np.asarray(filter_logits(logits, top_k=2, min_p=0.7))).tolist() == [
        [True, False, False, False]]


SETTINGS = [
    dict(penalty=1.3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.1),
    dict(penalty=0.7, temperature=0.6, top_k=0, top_p=1.0, min_p=0.0),
    dict(penalty=2.0, temperature=1.5, top_k=6, top_p=0.9, min_p=0.2),
    dict(penalty=1.0, temperature=0.8, top_k=0, top_p=0.8, min_p=0.05),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_processors_match_a_numpy_restatement(settings):
    ids, mask, logits = fixed_case()
    rows = [row[m.astype(bool)] for row, m in zip(ids, mask, strict=True)]
    expected = numpy_warpers(numpy_repetition_penalty(logits, rows, settings["penalty"]),
                             **{k: v for k, v in settings.items() if k != "penalty"})
    got = ours(logits, ids, mask, **settings)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-6)


@pytest.mark.parametrize("settings", SETTINGS)
def test_processors_match_transformers(settings):
    torch = pytest.importorskip("torch")
    generation = pytest.importorskip("transformers.generation.logits_process")
    ids, mask, logits = fixed_case()
    # As GenerationMixin._get_logits_processor builds them: the penalty ignoring each row's
    # left padding, then the sampling warpers.
    processors = generation.LogitsProcessorList([
        generation.RepetitionPenaltyLogitsProcessor(
            settings["penalty"], prompt_ignore_length=torch.tensor((1 - mask).sum(-1))),
        generation.TemperatureLogitsWarper(settings["temperature"])])
    if settings["top_k"]:
        processors.append(generation.TopKLogitsWarper(settings["top_k"]))
    if settings["top_p"] < 1:
        processors.append(generation.TopPLogitsWarper(settings["top_p"]))
    if settings["min_p"]:
        processors.append(generation.MinPLogitsWarper(settings["min_p"]))
    expected = processors(torch.tensor(ids, dtype=torch.long), torch.tensor(logits)).numpy()
    got = ours(logits, ids, mask, **settings)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-6)


def test_sample_token_penalises_before_temperature_and_draws_the_processed_distribution():
    ids, mask, logits = fixed_case()
    settings = dict(temperature=0.7, top_k=0, top_p=0.95, min_p=0.05)
    rows = [row[m.astype(bool)] for row, m in zip(ids, mask, strict=True)]
    expected = numpy_softmax(numpy_warpers(numpy_repetition_penalty(logits, rows, 1.5),
                                           **settings))
    n = 20000
    seen = jnp.repeat(seen_tokens(jnp.asarray(ids), jnp.asarray(mask), VOCAB), n, 0)
    tokens = np.asarray(sample_token(jnp.repeat(jnp.asarray(logits), n, 0), jax.random.key(0),
                                     repetition_penalty=1.5, seen=seen, **settings))
    for b in range(2):
        counts = np.bincount(tokens[b * n:(b + 1) * n], minlength=VOCAB) / n
        assert 0.5 * np.abs(counts - expected[b]).sum() < 0.02  # total variation distance
        assert (counts[expected[b] == 0] == 0).all()
    # Greedy decoding is penalised too (a processor, not a warper, in transformers).
    greedy = sample_token(jnp.asarray(logits), jax.random.key(0), temperature=0.0,
                          repetition_penalty=1.5, seen=seen[::n])
    np.testing.assert_array_equal(greedy, numpy_repetition_penalty(logits, rows, 1.5).argmax(-1))
