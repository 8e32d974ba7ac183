"""What the tests' batches are built with for a new (Qwen2-Audio-architecture) model: the
family's audio-token count, which `BatchSpec` takes from the caller as the experiment passes its
model's, and the family's chat format over a tokenizer."""

import functools

from sallm_jax.data.chat_format import ChatFormat, chat_format
from sallm_jax.models.families import num_audio_tokens
from sallm_jax.models.qwen2_audio.config import Qwen2AudioConfig
from sallm_jax.models.qwen2_audio.family import QWEN2_AUDIO

QWEN2_AUDIO_TOKENS = functools.partial(num_audio_tokens, Qwen2AudioConfig())


def qwen2_audio_chat(tokenizer) -> ChatFormat:
    """The Qwen2-Audio format over `tokenizer` (the project's, whose template is that family's),
    for a model whose audio token is the tokenizer's `<|AUDIO|>`."""
    return chat_format(tokenizer, QWEN2_AUDIO,
                       tokenizer.convert_tokens_to_ids(QWEN2_AUDIO.audio_token))
