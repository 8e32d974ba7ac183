"""Tiny random-weight checkpoint directories laid out like the published ones, for both families.

Each directory holds what a user downloads from the Hub, at small widths:
  config.json, model.safetensors      written by transformers' own class (`save_pretrained`)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja
                                      a byte-level BPE over the embedded sets' text with the
                                      family's special tokens, and the family's chat template
  preprocessor_config.json, processor_config.json   the family's processor settings
  generation_config.json              the family's end and pad ids
  adapter_config.json, adapter_model.safetensors    Granite Speech only, when asked: the PEFT
                                      LoRA adapter the released Granite Speech 3.3 folders carry

The templates are the published ones, verbatim:
  - Qwen2-Audio-7B-Instruct: `Qwen2AudioProcessor.default_chat_template` in transformers
    (models/qwen2_audio/processing_qwen2_audio.py), which `Qwen2AudioProcessor` writes into a
    saved folder;
  - Granite Speech 3.3: the Granite 3.3 instruct template, tests/fixtures/
    granite-3.3-instruct.chat_template.jinja, a copy of the public llama.cpp file
    models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja (4,567 bytes).
As in the published tokenizers, the special tokens follow the ordinary vocabulary (Granite's
`<|end_of_text|>` is id 0) and the model's embedding table is a little larger than the
tokenizer. Import only from tests that have already checked that torch and transformers are
installed.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch
import transformers

from sallm_jax.data.embedded_text import embedded_texts
from tests.models.hf_tiny import randomise, write_adapter

FAMILIES = ("qwen2_audio", "granite_speech")
GRANITE_TEMPLATE = (pathlib.Path(__file__).parent.parent / "fixtures"
                    / "granite-3.3-instruct.chat_template.jinja")
BPE_VOCAB = 640
EMBEDDING_SLACK = 8  # embedding rows past the tokenizer's last id, as the published models have


def _bpe(leading_special: tuple[str, ...]):
    """A byte-level BPE trained on the embedded sets' text; `leading_special` take ids 0...."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=list(leading_special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(embedded_texts(seed=5, draws=300), trainer=trainer)
    return backend


def qwen2_audio_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Qwen2-Audio's special tokens after the vocabulary; eos `<|im_end|>`, pad
    `<|endoftext|>`, and the published template."""
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_bpe(()), clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({
        "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
        "additional_special_tokens": ["<|im_start|>", "<|AUDIO|>", "<|audio_bos|>",
                                      "<|audio_eos|>"]})
    tokenizer.chat_template = transformers.Qwen2AudioProcessor.default_chat_template.fget(None)
    return tokenizer


def granite_speech_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Granite's `<|end_of_text|>` at id 0 (bos, eos, pad and unk alike), its role tokens and
    `<|audio|>` after the vocabulary, and the published Granite 3.3 template."""
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_bpe(("<|end_of_text|>",)), clean_up_tokenization_spaces=False,
        bos_token="<|end_of_text|>", eos_token="<|end_of_text|>", pad_token="<|end_of_text|>",
        unk_token="<|end_of_text|>")
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>", "<|audio|>"]})
    tokenizer.chat_template = GRANITE_TEMPLATE.read_text()
    return tokenizer


def _write_json(path: pathlib.Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2))


def save_qwen2_audio(path: pathlib.Path, seed: int) -> transformers.PreTrainedTokenizerFast:
    """Qwen2-Audio at small widths (128 mels and 30 s of audio, as published)."""
    tokenizer = qwen2_audio_tokenizer()
    config = transformers.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=32,
                          encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                          max_source_positions=1500),
        text_config=dict(model_type="qwen2", hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                         vocab_size=len(tokenizer) + EMBEDDING_SLACK,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    model = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    randomise(model)
    model.save_pretrained(path)
    extractor = transformers.WhisperFeatureExtractor(feature_size=128)
    transformers.Qwen2AudioProcessor(extractor, tokenizer).save_pretrained(path)
    extractor.save_pretrained(path)  # preprocessor_config.json, as the published folder has
    ends = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    _write_json(path / "generation_config.json", {
        "bos_token_id": ends[0], "eos_token_id": ends, "pad_token_id": ends[0],
        "do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.7})
    return tokenizer


def save_granite_speech(path: pathlib.Path, seed: int,
                        adapter: bool) -> transformers.PreTrainedTokenizerFast:
    """Granite Speech at small widths (80 mels stacked in pairs, projector windows of 15
    frames giving 3 queries each, as published), with its LoRA adapter when `adapter`."""
    tokenizer = granite_speech_tokenizer()
    config = transformers.GraniteSpeechConfig(
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=32, feedforward_mult=2,
                            num_heads=4, dim_head=8, output_dim=12, context_size=50,
                            max_pos_emb=50, conv_kernel_size=5, conv_expansion_factor=2),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=24, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=40,
                              encoder_hidden_size=32, cross_attention_frequency=1),
        text_config=dict(model_type="granite", hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                         vocab_size=len(tokenizer) + EMBEDDING_SLACK, embedding_multiplier=12.0,
                         attention_multiplier=0.015625, residual_multiplier=0.22,
                         logits_scaling=8.0, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"),
        has_lora_adapter=adapter, window_size=15, downsample_rate=5)
    torch.manual_seed(seed)
    model = transformers.GraniteSpeechForConditionalGeneration(config).eval()
    randomise(model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "chat_template.jinja").write_text(tokenizer.chat_template)
    # GraniteSpeechFeatureExtractor needs torchaudio to be built, so its files are written out.
    _write_json(path / "preprocessor_config.json", {
        "feature_extractor_type": "GraniteSpeechFeatureExtractor",
        "processor_class": "GraniteSpeechProcessor", "sampling_rate": 16000,
        "melspec_kwargs": {"sample_rate": 16000, "n_fft": 512, "win_length": 400,
                           "hop_length": 160, "n_mels": 80},
        "projector_window_size": 15, "projector_downsample_rate": 5})
    _write_json(path / "processor_config.json", {
        "processor_class": "GraniteSpeechProcessor", "audio_token": "<|audio|>"})
    end = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    _write_json(path / "generation_config.json",
                {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end})
    if adapter:
        text = config.text_config
        kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
        write_adapter(path, {
            f"language_model.model.layers.{i}.self_attn.{proj}": (text.hidden_size, out)
            for i in range(text.num_hidden_layers)
            for proj, out in (("q_proj", text.hidden_size), ("v_proj", kv))}, rank=4, alpha=8.0)
    return tokenizer


def save_published(path: str | os.PathLike, family: str, *, seed: int = 0,
                   adapter: bool = False) -> transformers.PreTrainedTokenizerFast:
    """Writes a `family` checkpoint directory (see the module docstring) and returns its
    tokenizer; `adapter` adds Granite Speech's LoRA adapter files."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if family == "qwen2_audio":
        if adapter:
            raise ValueError("the published Qwen2-Audio checkpoints carry no adapter")
        return save_qwen2_audio(path, seed)
    if family == "granite_speech":
        return save_granite_speech(path, seed, adapter)
    raise ValueError(f"family {family!r}: expected one of {FAMILIES}")
