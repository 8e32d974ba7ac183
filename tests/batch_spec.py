"""The audio-token count of the Qwen2-Audio family, which the tests' batch specs pass to
`BatchSpec` (the data pipeline takes it from the caller, as the experiment passes its model's)."""

import functools

from sallm_jax.models.families import num_audio_tokens
from sallm_jax.models.qwen2_audio.config import SpeechLMConfig

QWEN2_AUDIO_TOKENS = functools.partial(num_audio_tokens, SpeechLMConfig())
