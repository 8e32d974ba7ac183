"""Granite Speech log-mel features in JAX (transformers' `GraniteSpeechFeatureExtractor`).

torchaudio `MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
n_mels=80)`, then log10(max(., 1e-10)), max(x, clip max - 8) / 4 + 1, drop an odd last frame,
stack frame pairs into 160 dims. Each row is computed as if its clip were alone (transformers
zero-pads a batch first); frames past a clip hold its floor (max - 8) / 4 + 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
NUM_MEL_BINS = 80


def _hz_to_mel_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz_htk(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=4)
def htk_mel_filters(
    num_mel_bins: int = NUM_MEL_BINS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """[n_fft // 2 + 1, mels] float64, torchaudio `melscale_fbanks(norm=None, mel_scale="htk")`."""
    fft_freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    mel_points = np.linspace(
        _hz_to_mel_htk(0.0), _hz_to_mel_htk(sample_rate / 2.0), num_mel_bins + 2
    )
    hz_points = _mel_to_hz_htk(mel_points)
    widths = np.diff(hz_points)
    slopes = hz_points[None, :] - fft_freqs[:, None]
    falling = -slopes[:, :-2] / widths[:-1]
    rising = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(falling, rising))


@functools.lru_cache(maxsize=2)
def padded_window(n_fft: int = N_FFT, win_length: int = WIN_LENGTH) -> np.ndarray:
    """Periodic Hann(win_length) centred in n_fft zeros, as torch.stft pads a short window."""
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    window = np.zeros(n_fft)
    window[left : left + win_length] = hann
    return window


def granite_feature_frames(num_samples):
    """Stacked 160-dim frames for a clip of `num_samples` samples: (n // 160 + 1) // 2."""
    return (num_samples // HOP_LENGTH + 1) // 2


@jax.jit
def granite_log_mel(waveforms: jax.Array, num_samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Granite Speech features of a batch of 16 kHz clips.

    waveforms [batch, samples] float holds row b's clip in [:num_samples[b]] (the rest is never
    read); clips need > 256 samples (torch's reflect padding; shorter ones are edge-clamped here).
    Returns features [batch, (samples // 160 + 1) // 2, 160] float32 and feature_lengths [batch]
    int32 = (num_samples // 160 + 1) // 2.
    """
    waveforms = jnp.asarray(waveforms, jnp.float32)
    n = jnp.asarray(num_samples, jnp.int32)[:, None, None]
    num_frames = waveforms.shape[1] // HOP_LENGTH + 1
    # Sample read by tap k of frame t, reflected into each clip's own [0, n) ("reflect" mode:
    # the edge sample is not repeated). The same index table serves every row.
    index = jnp.asarray(
        np.arange(num_frames)[:, None] * HOP_LENGTH - N_FFT // 2 + np.arange(N_FFT)[None, :]
    )
    index = jnp.abs(index)[None]
    index = jnp.where(index >= n, 2 * (n - 1) - index, index)
    index = jnp.clip(index, 0, n - 1)  # [batch, frames, n_fft]
    frames = jax.vmap(lambda wave, idx: wave[idx])(waveforms, index)
    frames = frames * jnp.asarray(padded_window(), jnp.float32)
    spectrum = jnp.fft.rfft(frames, n=N_FFT, axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # [batch, frames, freqs]
    mel = jnp.matmul(
        power,
        jnp.asarray(htk_mel_filters(), jnp.float32),
        precision=jax.lax.Precision.HIGHEST,  # TPU default (one bf16 pass) is too coarse for 1e-4
    )
    log_mel = jnp.log10(jnp.maximum(mel, 1e-10))
    mel_lengths = n[:, 0, 0] // HOP_LENGTH + 1
    valid = (jnp.arange(num_frames)[None, :] < mel_lengths[:, None])[..., None]
    # The floor uses the clip's frames only, the odd last one included (transformers takes the
    # maximum before dropping it).
    clip_max = jnp.max(jnp.where(valid, log_mel, -jnp.inf), axis=(1, 2), keepdims=True)
    floor = clip_max - 8.0
    # An odd last frame is dropped, so stacked frames past the clip are wholly floor.
    kept = (jnp.arange(num_frames)[None, :] < 2 * (mel_lengths // 2)[:, None])[..., None]
    log_mel = jnp.where(kept, jnp.maximum(log_mel, floor), floor) / 4.0 + 1.0
    stacked = num_frames // 2
    features = log_mel[:, : 2 * stacked].reshape(log_mel.shape[0], stacked, 2 * NUM_MEL_BINS)
    return features, mel_lengths // 2
