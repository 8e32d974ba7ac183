"""The supervised losses: the transcript CTC term against a NumPy restatement of CTC's forward
recursion (Graves et al., 2006), over each family's valid audio embeddings, and the
cross-entropy left unchanged by it."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.qwen2_audio.config import AudioEncoderConfig, Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.models.qwen2_config import TextConfig
from sallm_jax.train.sft import sft_loss, transcript_ctc_loss
from tests.models import test_granite_units as granite

BLANK = 0


def numpy_ctc(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """-log p(labels | frames) by the alpha recursion over the blank-extended label sequence."""
    extended = [blank]
    for label in labels:
        extended += [label, blank]
    alpha = np.full(len(extended), -np.inf)
    alpha[0] = log_probs[0, blank]
    if labels:
        alpha[1] = log_probs[0, labels[0]]
    for t in range(1, len(log_probs)):
        new = np.full_like(alpha, -np.inf)
        for s, token in enumerate(extended):
            terms = [alpha[s]]
            if s >= 1:
                terms.append(alpha[s - 1])
            if s >= 2 and token != blank and token != extended[s - 2]:
                terms.append(alpha[s - 2])
            new[s] = np.logaddexp.reduce(terms) + log_probs[t, token]
        alpha = new
    return -float(np.logaddexp.reduce(alpha[-2:] if labels else alpha[-1:]))


def tiny_model() -> Qwen2AudioLM:
    config = Qwen2AudioConfig(
        audio=AudioEncoderConfig(num_mel_bins=80, d_model=32, encoder_layers=1,
                                 encoder_attention_heads=2, encoder_ffn_dim=64,
                                 max_source_positions=200),
        text=TextConfig(vocab_size=24, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                        tie_word_embeddings=True),
        audio_token_id=3)
    return Qwen2AudioLM(config, rngs=nnx.Rngs(0))


def batch_of(rng: np.random.Generator) -> dict[str, jax.Array]:
    # Two clips (1.0 s and 0.6 s -> 25 and 15 audio tokens), targets of 4 and 2 tokens, each
    # ending with the end token 2; a repeated label (7, 7) needs a blank between its copies.
    num_samples = np.array([16000, 9600], np.int32)
    waveforms = rng.normal(size=(2, 16000)).astype(np.float32) * 0.1
    waveforms[1, 9600:] = 0
    target_ids = np.array([[7, 7, 11, 2, 0], [5, 2, 0, 0, 0]], np.int32)
    target_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.int32)
    prompt_ids = np.array([[1] + [3] * 25 + [9], [0] * 10 + [1] + [3] * 15 + [9]], np.int32)
    return {"waveforms": jnp.asarray(waveforms), "num_samples": jnp.asarray(num_samples),
            "prompt_ids": jnp.asarray(prompt_ids), "prompt_mask": jnp.asarray(prompt_ids != 0),
            "target_ids": jnp.asarray(target_ids), "target_mask": jnp.asarray(target_mask),
            "valid": jnp.ones(2, jnp.float32)}


def test_transcript_ctc_matches_the_forward_recursion():
    model, batch = tiny_model(), batch_of(np.random.default_rng(0))
    audio = model.encode_batch_audio(batch)
    got = float(transcript_ctc_loss(model, batch, audio, BLANK))
    log_probs = np.asarray(jax.nn.log_softmax(model.language_model.logits(audio), -1),
                           np.float64)
    expected = (numpy_ctc(log_probs[0, :25], [7, 7, 11], BLANK)
                + numpy_ctc(log_probs[1, :15], [5], BLANK)) / 4  # four transcript tokens
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_granite_transcript_ctc_reads_granite_audio_token_counts():
    """Granite's processor gives a clip of n samples ceil(((n // 160 + 1) // 2) / 15) * 3
    placeholders: 12 for 1.0 s and 6 for 0.6 s (Qwen2-Audio's count would be 50 and 30)."""
    model, batch = granite.random_model(granite.CONFIG), batch_of(np.random.default_rng(0))
    audio = model.encode_batch_audio(batch)
    assert audio.shape[1] == 12
    got = float(transcript_ctc_loss(model, batch, audio, BLANK))
    log_probs = np.asarray(jax.nn.log_softmax(model.language_model.logits(audio), -1),
                           np.float64)
    expected = (numpy_ctc(log_probs[0, :12], [7, 7, 11], BLANK)
                + numpy_ctc(log_probs[1, :6], [5], BLANK)) / 4
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_ctc_weight_adds_the_ctc_term_and_nothing_else():
    model, batch = tiny_model(), batch_of(np.random.default_rng(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    plain, plain_metrics = sft_loss(params, rest, graphdef, batch)
    mixed, metrics = sft_loss(params, rest, graphdef, batch, ctc_weight=0.3, blank_id=BLANK)
    assert "ctc_loss" not in plain_metrics
    np.testing.assert_allclose(float(metrics["loss"]), float(plain), rtol=1e-6)
    np.testing.assert_allclose(float(mixed), float(plain) + 0.3 * float(metrics["ctc_loss"]),
                               rtol=1e-6)
