"""Granite log-mel features against a float64 NumPy restatement of the recipe.

transformers computes these with torchaudio, which does not load beside the CPU torch wheel used
here, so the reference below restates torchaudio's MelSpectrogram (centred reflect-padded STFT,
n_fft 512, periodic Hann(400) centred in 512, hop 160, power 2, HTK mel filters without
normalisation) and `GraniteSpeechFeatureExtractor._extract_mel_spectrograms` clip by clip.
"""

import numpy as np
import pytest

from sallm_jax.audio.granite_features import granite_feature_frames, granite_log_mel


def _reference(clip: np.ndarray) -> tuple[np.ndarray, float]:
    """One clip's features [(n // 160 + 1) // 2, 160] and its floor, float64, from the recipe."""
    clip = clip.astype(np.float64)
    padded = np.pad(clip, 256, mode="reflect")
    num_frames = 1 + clip.size // 160
    window = np.zeros(512)
    window[56:456] = np.hanning(401)[:400]  # periodic Hann(400) = first 400 of symmetric(401)
    frames = np.stack([padded[t * 160 : t * 160 + 512] for t in range(num_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [frames, 257]

    def mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(8000.0), 82))
    freqs = np.linspace(0.0, 8000.0, 257)
    filters = np.zeros((257, 80))
    for m in range(80):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        filters[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    log_mel = np.log10(np.maximum(power @ filters, 1e-10))
    floor = log_mel.max() - 8.0
    log_mel = np.maximum(log_mel, floor) / 4.0 + 1.0
    if log_mel.shape[0] % 2:
        log_mel = log_mel[:-1]
    return log_mel.reshape(-1, 160), floor / 4.0 + 1.0


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(24_000) / 16000
    tone_then_hiss = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.5)
    tone_then_hiss += 1e-3 * rng.standard_normal(t.size)
    return {
        "shortest": rng.uniform(-1, 1, 257),  # the least torch's reflect padding accepts
        "odd_mel_frames": rng.uniform(-0.5, 0.5, 3_200),  # 21 mel frames -> 10 stacked
        "even_mel_frames": rng.uniform(-0.5, 0.5, 5_000),  # 32 mel frames -> 16 stacked
        "chirp": np.sin(2 * np.pi * (100 + 3000 * t[:12_345]) * t[:12_345]),
        # A loud start and a quiet tail: the (max - 8) floor cuts in.
        "tone_then_hiss": tone_then_hiss,
    }


def test_matches_numpy_reference_clip_by_clip():
    clips = _clips()
    longest = max(c.size for c in clips.values())
    # Whatever follows a clip in its row must not be read: fill it with loud noise.
    batch = np.random.default_rng(1).uniform(-1, 1, (len(clips), longest + 100))
    num_samples = np.array([c.size for c in clips.values()], np.int32)
    for row, clip in enumerate(clips.values()):
        batch[row, : clip.size] = clip
    features, lengths = granite_log_mel(batch.astype(np.float32), num_samples)
    features, lengths = np.asarray(features), np.asarray(lengths)
    assert features.dtype == np.float32
    assert features.shape == (len(clips), ((longest + 100) // 160 + 1) // 2, 160)
    for row, (name, clip) in enumerate(clips.items()):
        reference, floor = _reference(clip)
        assert lengths[row] == reference.shape[0] == granite_feature_frames(clip.size), name
        valid = lengths[row]
        np.testing.assert_allclose(features[row, :valid], reference, atol=1e-4, err_msg=name)
        # Past the clip: the clip's floor, (max - 8) / 4 + 1, as zero padding gives in transformers.
        np.testing.assert_allclose(features[row, valid:], floor, atol=1e-4, err_msg=name)


def test_a_clip_alone_equals_the_clip_in_a_batch():
    clip = np.random.default_rng(2).uniform(-1, 1, 4_000).astype(np.float32)
    alone, _ = granite_log_mel(clip[None], np.array([4_000]))
    batch = np.zeros((2, 9_000), np.float32)
    batch[0, :4_000] = clip
    batch[1] = np.random.default_rng(3).uniform(-1, 1, 9_000)
    batched, lengths = granite_log_mel(batch, np.array([4_000, 9_000]))
    assert list(np.asarray(lengths)) == [13, 28]
    # Equal up to float32 rounding: XLA may round a batch of two differently from a batch of
    # one (seen: 1 ulp in 3% of the values on a loaded machine). The padding or the other clip
    # leaking into this one would move its features far beyond that (the next 5,000 samples read
    # as part of the clip move them by up to 0.27).
    np.testing.assert_allclose(np.asarray(batched)[0, :13], np.asarray(alone)[0], rtol=0,
                               atol=1e-6)


def test_silence_is_constant():
    # log10(1e-10) = -10 everywhere: floor -18, and max(-10, -18) / 4 + 1 = -1.5 by hand.
    features, lengths = granite_log_mel(np.zeros((1, 3_200), np.float32), np.array([3_200]))
    assert int(lengths[0]) == 10
    np.testing.assert_array_equal(np.asarray(features), np.full((1, 10, 160), -1.5, np.float32))


@pytest.mark.parametrize(
    ("num_samples", "frames"), [(257, 1), (319, 1), (320, 1), (480, 2), (16_000, 50), (16_160, 51)]
)
def test_feature_frames(num_samples, frames):
    assert granite_feature_frames(num_samples) == frames
