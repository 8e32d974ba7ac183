"""A new model (no `model.checkpoint`): its config and the prompt family its tokenizer speaks."""

from __future__ import annotations

import ml_collections

from sallm_jax.models.families import ModelFamily, families
from sallm_jax.runtime.user_errors import ConfigError, require


def new_model_config(cfg: ml_collections.ConfigDict, vocab_size: int, audio_token_id: int):
    """The config of `model.family` at the sizes `model.audio` / `model.text`; ConfigError
    naming model.family when no family has that name, or model.audio / model.text when they
    are not its sizes."""
    known = families()
    require(cfg.model.family in known, "model.family", f"one of {sorted(known)}",
            cfg.model.family)
    family = known[cfg.model.family]
    try:
        return family.from_sizes(cfg.model.audio.to_dict(), cfg.model.text.to_dict(),
                                 vocab_size=vocab_size, audio_token_id=audio_token_id)
    except TypeError as error:
        raise ConfigError(
            f"model.audio / model.text: not {family.model_type}'s sizes ({error}); a config "
            f"file takes a family with its default sizes by configs/base.py's "
            f"use_family(c, {family.model_type!r})") from None


def check_new_model(cfg: ml_collections.ConfigDict) -> None:
    """`new_model_config`'s errors, and data.audio_buckets_s within the encoder's reach."""
    config = new_model_config(cfg, cfg.tokenizer.vocab_size, audio_token_id=0)
    longest = families()[cfg.model.family].max_audio_seconds(config)
    buckets = tuple(cfg.data.audio_buckets_s)
    require(buckets[-1] <= longest, "data.audio_buckets_s",
            f"at most {longest:g} s (the longest clip model.audio's encoder takes)", buckets)


def prompt_family(tokenizer, preferred: ModelFamily) -> ModelFamily:
    """The family whose placeholder `tokenizer` holds as one token, `preferred` first (the
    project's tokenizer holds Qwen2-Audio's `<|AUDIO|>`); ConfigError naming tokenizer.path
    when it holds none."""
    for family in (preferred, *families().values()):
        if len(tokenizer(family.audio_token, add_special_tokens=False)["input_ids"]) == 1:
            return family
    placeholders = sorted(f.audio_token for f in families().values())
    raise ConfigError(f"tokenizer.path: {getattr(tokenizer, 'name_or_path', '')} holds none of "
                      f"the audio placeholders {placeholders} as one token; the model would "
                      f"never hear its audio")
