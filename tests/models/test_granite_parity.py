"""GraniteSpeechLM against transformers' GraniteSpeechForConditionalGeneration (tiny, float32)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cached_decoding import cached_logits  # noqa: E402
from hf_tiny import jax_model  # noqa: E402

from sallm_jax.models.abstract import count_params  # noqa: E402
from sallm_jax.models.granite_speech.config import granite_audio_token_count  # noqa: E402

AUDIO_ID = 99
PAD_ID = 0
FRAMES = 37  # 4 attention blocks of 8 with a remainder of 5; 3 projector windows of 15
LENGTHS = (37, 20)  # -> 9 and 6 audio tokens
LOGITS_SCALING = 4.0
TOL = 1e-4

# Whole-program jit: on a 2-core CPU, eager mode would compile every op separately (seconds).
forward = nnx.jit(lambda model, *args: model(*args))
encode = nnx.jit(lambda model, features: model.encoder(features))
encode_audio = nnx.jit(lambda model, *args: model.encode_audio(*args))


def hf_config():
    return transformers.GraniteSpeechConfig(
        encoder_config=dict(
            input_dim=160,
            num_layers=3,  # self-conditioning after block 1, then two more blocks
            hidden_dim=32,
            feedforward_mult=2,
            num_heads=4,
            dim_head=8,
            output_dim=10,
            context_size=8,
            max_pos_emb=10,
            conv_kernel_size=4,  # even: the depthwise padding is asymmetric (2, 1)
            conv_expansion_factor=2,
        ),
        projector_config=dict(
            model_type="blip_2_qformer",
            hidden_size=24,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=40,
            encoder_hidden_size=32,
            cross_attention_frequency=2,  # layers 0 and 2 cross-attend, layer 1 does not
        ),
        text_config=dict(
            model_type="granite",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            vocab_size=100,
            embedding_multiplier=3.0,
            attention_multiplier=0.3,
            residual_multiplier=0.5,
            logits_scaling=LOGITS_SCALING,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        audio_token_index=AUDIO_ID,
        has_lora_adapter=False,
    )


def randomise(model) -> None:
    """N(0, 0.1) weights, norm scales near 1, BatchNorm statistics far from (0, 1).

    The default init (std 0.02) leaves attention nearly uniform, which would hide errors in the
    relative positions, masking or head grouping; identity BatchNorm statistics would hide a
    skipped or mis-ordered BatchNorm.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.3 * torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand_like(buffer))


def _inputs():
    """Two clips (37 and 20 valid frames) and left-padded prompts with expanded placeholders."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, FRAMES, 160)).astype(np.float32)
    # What the extractor leaves past a clip's end: a constant floor, as for zero-padded audio.
    features[1, LENGTHS[1] :] = -0.75
    rows = []
    counts = granite_audio_token_count(np.array(LENGTHS))
    for n_audio, n_suffix in zip(counts, (5, 9), strict=True):
        prefix = rng.integers(1, AUDIO_ID, size=3)
        suffix = rng.integers(1, AUDIO_ID, size=n_suffix)
        rows.append(np.concatenate([prefix, np.full(n_audio, AUDIO_ID), suffix]))
    seq = max(len(r) for r in rows)
    input_ids = np.full((2, seq), PAD_ID, np.int32)
    attention_mask = np.zeros((2, seq), np.int32)
    for b, row in enumerate(rows):
        input_ids[b, seq - len(row) :] = row
        attention_mask[b, seq - len(row) :] = 1
    return features, np.array(LENGTHS, np.int32), input_ids, attention_mask


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf model, ours loaded from its save_pretrained dir, inputs, hf outputs)."""
    torch.manual_seed(0)
    hf = transformers.GraniteSpeechForConditionalGeneration(hf_config()).eval()
    randomise(hf)
    path = tmp_path_factory.mktemp("granite_speech_tiny")
    hf.save_pretrained(path)
    ours = jax_model(path)

    features, lengths, input_ids, attention_mask = _inputs()
    counts = granite_audio_token_count(lengths)
    # What GraniteSpeechFeatureExtractor returns beside the features: valid projector tokens.
    feature_mask = np.arange(counts.max())[None, :] < counts[:, None]
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    captured = {}

    def keep(name):
        def hook(module, args, out):
            # Returning None leaves the forward untouched.
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
            captured[name] = out.detach().numpy()

        return hook

    hooks = [
        hf.model.encoder.register_forward_hook(keep("encoder")),
        hf.model.projector.register_forward_hook(keep("audio")),
    ]
    with torch.no_grad():
        out = hf(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            input_features=torch.from_numpy(features),
            input_features_mask=torch.from_numpy(feature_mask),
            position_ids=torch.from_numpy(positions).long(),
        )
    for hook in hooks:
        hook.remove()
    hf_out = {"logits": out.logits.numpy(), **captured}
    return hf, ours, (features, lengths, input_ids, attention_mask), hf_out


def test_encoder_matches_transformers(models):
    _, ours, (features, _, _, _), hf_out = models
    encoded = np.asarray(encode(ours, jnp.asarray(features)))
    assert encoded.shape == hf_out["encoder"].shape == (2, FRAMES, 32)
    np.testing.assert_allclose(encoded, hf_out["encoder"], atol=TOL, rtol=0)


def test_projector_matches_transformers(models):
    _, ours, (features, lengths, _, _), hf_out = models
    audio = np.asarray(encode_audio(ours, jnp.asarray(features), jnp.asarray(lengths)))
    assert audio.shape == hf_out["audio"].shape == (2, 9, 32)
    # Every row, padding tokens included: the projector itself masks nothing.
    np.testing.assert_allclose(audio, hf_out["audio"], atol=TOL, rtol=0)


def test_logits_match_transformers(models):
    _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    logits = forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    assert logits.dtype == jnp.float32
    logits = np.asarray(logits)
    assert np.isfinite(logits).all()
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_apply_logits_scaling_matches_granite_for_causal_lm(models):
    """apply_logits_scaling=True gives GraniteForCausalLM's logits (the 5.23 wrapper's / scale).

    Text only, against transformers' own Granite causal LM holding the wrapper's weights.
    """
    hf, ours, (_, _, input_ids, attention_mask), _ = models
    causal = transformers.GraniteForCausalLM(hf.config.text_config).eval()
    causal.model.load_state_dict(hf.model.language_model.state_dict())
    with torch.no_grad():
        causal.lm_head.weight.copy_(hf.lm_head.weight)
    text_ids = np.where(input_ids == AUDIO_ID, 5, input_ids)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    with torch.no_grad():
        reference = causal(
            input_ids=torch.from_numpy(text_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            position_ids=torch.from_numpy(positions).long(),
        ).logits.numpy()
    text = dataclasses.replace(ours.config.text, apply_logits_scaling=True)
    scaled = nnx.clone(ours)
    scaled.config = dataclasses.replace(ours.config, text=text)
    scaled.language_model.config = text
    logits = np.asarray(forward(scaled, jnp.asarray(text_ids), jnp.asarray(attention_mask)))
    valid = attention_mask.astype(bool)
    np.testing.assert_allclose(logits[valid], reference[valid], atol=TOL / LOGITS_SCALING, rtol=0)
    assert np.abs(reference[valid]).max() > 0.5  # not vanishing: the scale shows


def test_cached_decoding_matches_full_forward(models):
    _, ours, (features, lengths, input_ids, attention_mask), hf_out = models
    batch, seq = input_ids.shape
    chunks = [(0, 12), (12, 16)] + [(t, t + 1) for t in range(16, seq)]
    cached, cache = cached_logits(ours, input_ids, attention_mask, features, lengths, chunks,
                                  extra=3)
    assert cache.k.shape == (2, batch, seq + 3, 2, 8)
    valid = attention_mask.astype(bool)
    full = np.asarray(
        forward(ours, *map(jnp.asarray, (input_ids, attention_mask, features, lengths)))
    )
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=0)
    np.testing.assert_allclose(cached[valid], hf_out["logits"][valid], atol=TOL, rtol=0)


def test_count_params_matches_transformers(models):
    hf, ours, _, _ = models
    assert count_params(ours.config) == sum(p.numel() for p in hf.parameters())


def test_audio_token_count_matches_the_processor():
    extractor = transformers.GraniteSpeechFeatureExtractor.__new__(
        transformers.GraniteSpeechFeatureExtractor
    )  # __init__ needs torchaudio; the counting rule reads only these attributes
    extractor.melspec_kwargs = {"hop_length": 160}
    extractor.projector_window_size, extractor.projector_downsample_rate = 15, 5
    samples = [1, 159, 160, 4_639, 4_640, 4_960, 16_000, 160_000]
    expected = extractor._get_num_audio_features(samples)
    frames = (np.array(samples) // 160 + 1) // 2
    np.testing.assert_array_equal(granite_audio_token_count(frames), expected)
    assert granite_audio_token_count(30) == 6 and granite_audio_token_count(31) == 9
