"""Tiny random-weight checkpoint directories laid out like the published ones, for both families.

Each directory holds what a user downloads from the Hub, at small widths: config.json and
model.safetensors written by transformers' own class (`save_pretrained`, weights `randomise`d);
the tokenizer with the family's special tokens and published chat template, the processor files
and generation_config.json, written as `sallm-jax random-checkpoint` writes them
(`sallm_jax.commands.random_checkpoint.write_processor_files`); and, for Granite Speech when
asked, the PEFT LoRA adapter files the released Granite Speech 3.3 folders carry. As in the
published models, the embedding table is a little larger than the tokenizer. Import only
from tests that have already checked that torch and transformers are installed.
"""

from __future__ import annotations

import os
import pathlib

import torch
import transformers

from sallm_jax.commands.random_checkpoint import family_tokenizer, write_processor_files
from tests.models.hf_tiny import adapter_shapes, randomise, write_adapter

FAMILIES = ("qwen2_audio", "granite_speech")
EMBEDDING_SLACK = 8  # embedding rows past the tokenizer's last id, as the published models have


def qwen2_audio_config(vocab_size: int, audio_token_id: int) -> transformers.Qwen2AudioConfig:
    """Qwen2-Audio at small widths, with the published 128 mels and 30 s of audio."""
    return transformers.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=32,
                          encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                          max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                         vocab_size=vocab_size,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        audio_token_index=audio_token_id)


def granite_speech_config(vocab_size: int, audio_token_id: int,
                          adapter: bool) -> transformers.GraniteSpeechConfig:
    """Granite Speech at small widths, with the published 80 mels stacked in pairs and
    projector windows of 15 frames giving 3 queries each."""
    return transformers.GraniteSpeechConfig(
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=32, feedforward_mult=2,
                            num_heads=4, dim_head=8, output_dim=12, context_size=50,
                            max_pos_emb=50, conv_kernel_size=5, conv_expansion_factor=2),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=24, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=40,
                              encoder_hidden_size=32, cross_attention_frequency=1),
        text_config=dict(model_type="granite", hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                         vocab_size=vocab_size, embedding_multiplier=12.0,
                         attention_multiplier=0.015625, residual_multiplier=0.22,
                         logits_scaling=8.0, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        audio_token_index=audio_token_id, has_lora_adapter=adapter, window_size=15,
        downsample_rate=5)


def save_published(path: str | os.PathLike, family: str, *, seed: int = 0,
                   adapter: bool = False) -> transformers.PreTrainedTokenizerFast:
    """Writes a `family` checkpoint directory (see the module docstring) and returns its
    tokenizer; `adapter` adds Granite Speech's LoRA adapter files (rank 4, alpha 8)."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: expected one of {FAMILIES}")
    if adapter and family != "granite_speech":
        raise ValueError("only the published Granite Speech checkpoints carry an adapter")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = family_tokenizer(family)
    vocab_size = len(tokenizer) + EMBEDDING_SLACK
    if family == "qwen2_audio":
        audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        config, model_class = (qwen2_audio_config(vocab_size, audio_id),
                               transformers.Qwen2AudioForConditionalGeneration)
    else:
        audio_id = tokenizer.convert_tokens_to_ids("<|audio|>")
        config, model_class = (granite_speech_config(vocab_size, audio_id, adapter),
                               transformers.GraniteSpeechForConditionalGeneration)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    randomise(model)
    model.save_pretrained(path)
    mel_bins = (config.audio_config.num_mel_bins if family == "qwen2_audio"
                else config.encoder_config.input_dim // 2)  # Granite stacks frame pairs
    write_processor_files(path, family, tokenizer, mel_bins)
    if adapter:
        write_adapter(path, adapter_shapes(config.text_config), rank=4, alpha=8.0)
    return tokenizer
