"""Decode audio files into float32 mono waveforms at the rate the feature extractor expects."""

from __future__ import annotations

import os
import wave

import numpy as np
import soundfile
import soxr


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    offset: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """[samples] float32 mono in [-1, 1] (channels averaged) decoded from `path`.

    Any format libsndfile decodes (wav, flac, ogg; mp3 with libsndfile >= 1.1). `sample_rate` in
    Hz (soxr "HQ" resamples other rates); `offset`, `duration` in seconds (None: from the start,
    to the end). Raises ValueError if the file is missing or undecodable, the span holds no
    samples, or a sample is NaN or infinite.
    """
    if not os.path.exists(path):
        raise ValueError(f"{os.fspath(path)}: no such audio file")
    try:
        with soundfile.SoundFile(path) as audio_file:
            file_rate = audio_file.samplerate
            start = int(round((offset or 0.0) * file_rate))
            frames = -1 if duration is None else int(round(duration * file_rate))
            if start:
                audio_file.seek(min(start, audio_file.frames))
            # always_2d: mono and multi-channel files both come back [samples, channels].
            audio = audio_file.read(frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot decode audio: {error}") from error
    if audio.shape[0] == 0:
        raise ValueError(
            f"{os.fspath(path)}: no audio samples (offset={offset}, duration={duration})"
        )
    if not np.isfinite(audio).all():
        raise ValueError(f"{os.fspath(path)}: audio holds NaN or infinite samples")
    mono = audio.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    # Resampling can overshoot full-scale input by a little.
    return np.clip(mono, -1.0, 1.0).astype(np.float32)


def declared_frames(path: str | os.PathLike) -> tuple[int, int]:
    """(frames, sample rate) that the header declares, without decoding; ValueError if unreadable.

    PCM WAV: the data chunk's declared size (a truncated file decodes fewer samples).
    """
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            return wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError):
        pass  # not a PCM WAV file (float WAV, flac, ogg, mp3)
    except OSError as error:  # a directory, no permission, ...
        raise ValueError(f"{os.fspath(path)}: cannot open: {error}") from error
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot read the audio header: {error}") from error
    return info.frames, info.samplerate
