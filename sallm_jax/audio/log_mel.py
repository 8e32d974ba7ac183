"""Whisper log-mel features in JAX (transformers' `WhisperFeatureExtractor`).

Reflect-pad n_fft // 2 = 200, periodic Hann(400) frames every 160 samples, |rfft|^2, Slaney
area-normalised mel filters over 0..8000 Hz, drop the last frame, log10(max(., 1e-10)), clamp at
(clip max - 8), (x + 4) / 4. A clip's valid frames equal transformers' (which zero-pads to 30 s)
when its bucket adds >= 200 zeros after it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CLIPS_PER_STEP_ON_CPU = 2


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = np.asarray(hz, np.float64)
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    mel[log_region] = min_log_mel + np.log(hz[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = np.asarray(mel, np.float64)
    hz = mel * f_sp
    log_region = mel >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return hz


@functools.lru_cache(maxsize=8)
def mel_filters(
    num_mel_bins: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters over 0..8000 Hz: [n_fft // 2 + 1, mels]."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(
        _hz_to_mel_slaney(np.array([0.0]))[0],
        _hz_to_mel_slaney(np.array([8000.0]))[0],
        num_mel_bins + 2,
    )
    hz_points = _mel_to_hz_slaney(mel_points)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (fft_freqs[:, None] - lower) / (centre - lower)
    falling = (upper - fft_freqs[:, None]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: every filter has unit area in Hz, so wide high bands are not louder.
    return filters * (2.0 / (upper - lower))


@functools.lru_cache(maxsize=2)
def _hann_periodic(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


@functools.partial(jax.jit, static_argnames=("num_mel_bins",))
def log_mel_spectrogram(waveforms: jax.Array, num_mel_bins: int = 80) -> jax.Array:
    """[batch, samples // 160, num_mel_bins] float32 Whisper features of zero-padded 16 kHz clips.

    num_mel_bins: 80 (Whisper v1/v2) or 128 (Whisper v3, Qwen2-Audio). The floor is per row.
    """
    waveforms = jnp.asarray(waveforms, jnp.float32)
    filters = jnp.asarray(mel_filters(num_mel_bins), jnp.float32)
    window = jnp.asarray(_hann_periodic(N_FFT), jnp.float32)
    one_clip = functools.partial(_clip_log_mel, filters=filters, window=window)
    if jax.default_backend() == "cpu":
        # A few clips at a time: on a CPU the frames and spectrum of a whole batch do not fit in
        # cache (2.5-3x faster); accelerators take the whole batch at once.
        return jax.lax.map(one_clip, waveforms, batch_size=CLIPS_PER_STEP_ON_CPU)
    return jax.vmap(one_clip)(waveforms)


def _clip_log_mel(clip: jax.Array, filters: jax.Array, window: jax.Array) -> jax.Array:
    """[samples] -> [samples // 160, mel bins] (see `log_mel_spectrogram`)."""
    padded = jnp.pad(clip, (N_FFT // 2, N_FFT // 2), mode="reflect")
    # transformers keeps 1 + samples // hop frames and then drops the last one.
    num_frames = clip.shape[-1] // HOP_LENGTH
    index = np.arange(num_frames)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]
    spectrum = jnp.fft.rfft(padded[index] * window, n=N_FFT, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [frames, freqs]
    mel = jnp.matmul(
        power,
        filters,
        precision=jax.lax.Precision.HIGHEST,  # TPU default (one bf16 pass) is too coarse for 1e-4
    )
    log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
    log_spec = jnp.maximum(log_spec, jnp.max(log_spec) - 8.0)
    return (log_spec + 4.0) / 4.0


def num_feature_frames(num_samples):
    """ceil(num_samples / 160) valid frames, as `WhisperFeatureExtractor`'s attention mask."""
    return -(-num_samples // HOP_LENGTH)
