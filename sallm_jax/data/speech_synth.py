"""Offline text-to-speech with eSpeak NG, loaded from the `espeakng-loader` wheel through ctypes.

The wheel ships `libespeak-ng.so` and its voice data (no network, no system package). The
library's synthesiser state is C globals, so every call runs under one module-level lock.
"""

from __future__ import annotations

import _ctypes  # dlclose: see _Engine
import ctypes
import dataclasses
import threading

import numpy as np

# Values from espeak-ng's `speak_lib.h`.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_PITCH = 3

# eSpeak NG names its British English voice file "en" (language tag en-gb); accept the tag too.
_VOICE_ALIASES = {"en-gb": "en"}

# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues synthesis.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One eSpeak NG speaker variant.

    `voice`: e.g. "en-us", "en-gb", "en-gb-scotland", a variant after '+' ("en-us+f3", from
    espeak-ng-data/voices/!v); `rate`: words per minute, 80..450; `pitch`: base pitch, 0..99
    (eSpeak's default 50). ValueError outside those ranges.
    """

    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not 80 <= self.rate <= 450:
            raise ValueError(f"Speaker.rate: expected 80..450 words per minute, got {self.rate}")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"Speaker.pitch: expected 0..99, got {self.pitch}")


class _Engine:
    """One freshly loaded copy of libespeak-ng; use as a context manager around one utterance.

    eSpeak keeps wave-generator state in C statics that espeak_Terminate does not reset; a fresh
    load per utterance (dlclose after) makes each clip a pure function of its inputs, as long as
    nothing else in the process keeps libespeak-ng loaded.
    """

    def __enter__(self) -> _Engine:
        import espeakng_loader  # imported lazily: only data building needs it

        self.chunks: list[np.ndarray] = []
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sample_rate <= 0:
            self._unload()
            raise RuntimeError(f"espeak_Initialize failed with data path {data_path.decode()!r}")
        # Keep a reference to the ctypes callback: if it were garbage collected the C library would
        # call freed memory.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        return self

    def __exit__(self, *exc_info) -> None:
        self.lib.espeak_Terminate()
        self._unload()

    def _unload(self) -> None:
        _ctypes.dlclose(self.lib._handle)

    def _collect(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def speak(self, text: str, speaker: Speaker, seed: int) -> np.ndarray:
        """Int16 samples [samples] for `text`."""
        lib = self.lib
        base, plus, variant = speaker.voice.partition("+")
        voice = _VOICE_ALIASES.get(base.lower(), base) + plus + variant
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"Speaker.voice: eSpeak NG has no voice {speaker.voice!r}")
        # Absolute values (relative=0): the voice file would otherwise decide them.
        lib.espeak_SetParameter(_PARAM_RATE, speaker.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, speaker.pitch, 0)
        # Breath and frication noise come from eSpeak's own generator: seed it per utterance.
        lib.espeak_ng_SetRandSeed(seed)
        encoded = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(
            encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed (status {status}) for text {text!r}")
        lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0,), np.int16)


# The library's globals (callback, voice, parameters) are process-wide: one utterance at a time.
_LOCK = threading.Lock()


def synthesize(text: str, speaker: Speaker = Speaker(), seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak `text` with `speaker`; the same (text, speaker, seed) always gives the same samples.

    Returns (waveform [samples] float32 in [-1, 1), sample_rate: eSpeak NG's 22,050 Hz).
    """
    if not text.strip():
        raise ValueError("synthesize: text is empty")
    with _LOCK, _Engine() as engine:
        samples = engine.speak(text, speaker, seed)
        sample_rate = engine.sample_rate
    return samples.astype(np.float32) / 32768.0, sample_rate
