"""Tiny random transformers Qwen2-Audio checkpoints and inputs, shared by the model tests.

Import only from tests that have already checked that torch and transformers are installed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers

from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.models.hub.safetensors_io import SafetensorsDir
from sallm_jax.models.qwen2_audio.config import audio_token_count

AUDIO_ID = 299
VOCAB = 300
PAD_ID = 0
MEL_BINS = 80
FRAMES = 200  # 2 x max_source_positions: transformers accepts no other length
LENGTHS = (200, 130)


def qwen2_audio_config() -> transformers.Qwen2AudioConfig:
    """2+2 layers, width 64, GQA (4 heads over 2 KV heads), 80 mels, vocab 300."""
    return transformers.Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder",
            num_mel_bins=MEL_BINS,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=4,
            encoder_ffn_dim=128,
            max_source_positions=FRAMES // 2,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=VOCAB,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        audio_token_index=AUDIO_ID,
    )


def randomise(model: torch.nn.Module, std: float = 0.1) -> None:
    """N(0, std) weights, norm scales near 1, BatchNorm statistics far from (0, 1), in place.

    The default init (std 0.02) leaves attention nearly uniform, which would hide errors in
    RoPE, masking or head grouping; std 0.1 gives attention logits of order one. Norm scales get
    noise around 1 and BatchNorm non-identity statistics so that a swapped or skipped norm shows.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                param.copy_(1.0 + std * torch.randn_like(param))
            else:
                param.copy_(std * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.3 * torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand_like(buffer))


def qwen2_audio_model(seed: int = 0) -> transformers.Qwen2AudioForConditionalGeneration:
    """The tiny model in eval mode with `randomise`d weights (seeded)."""
    torch.manual_seed(seed)
    model = transformers.Qwen2AudioForConditionalGeneration(qwen2_audio_config()).eval()
    randomise(model)
    return model


def save_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over ids 0..VOCAB-1 ("w{i}"), with `<|AUDIO|>` = AUDIO_ID and a
    Qwen2-Audio-style chat template, saved to `path` and returned."""
    import tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab["<|AUDIO|>"] = AUDIO_ID
    del vocab[f"w{AUDIO_ID}"]
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w1"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="w0", unk_token="w1"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|AUDIO|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}"
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def save_qwen2_audio(
    path: str | os.PathLike, seed: int = 0, with_processor_files: bool = False
) -> transformers.Qwen2AudioForConditionalGeneration:
    """Writes the tiny model with `save_pretrained` (plus, optionally, a tokenizer and a
    Whisper feature-extractor config) and returns it."""
    model = qwen2_audio_model(seed)
    model.save_pretrained(path)
    if with_processor_files:
        save_tokenizer(path)
        transformers.WhisperFeatureExtractor(feature_size=MEL_BINS).save_pretrained(path)
    return model


def save_peft_adapter(path: str | os.PathLike, *, rank: int, alpha: float, seed: int = 1) -> None:
    """Saves a LoRA adapter for `qwen2_audio_model()` on the language model's q_proj / v_proj,
    with A and B drawn from N(0, 0.2) (PEFT starts B at zero, which would test nothing).

    With PEFT installed, PEFT writes the files (keys in transformers 5.x's in-memory layout,
    `base_model.model.model.language_model.layers.N...`); without it, the same files are written
    by hand.
    """
    try:
        import peft
    except ImportError:
        peft = None
    torch.manual_seed(seed)
    if peft is None:
        config = qwen2_audio_config().text_config
        kv = config.num_key_value_heads * config.hidden_size // config.num_attention_heads
        shapes = {
            f"model.language_model.layers.{i}.self_attn.{proj}": (config.hidden_size, out)
            for i in range(config.num_hidden_layers)
            for proj, out in (("q_proj", config.hidden_size), ("v_proj", kv))
        }
        write_adapter(path, shapes, rank=rank, alpha=alpha)
        return
    # The regex keeps PEFT off the Whisper encoder's q_proj / v_proj, as apply_lora's scope does.
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )
    adapted = peft.get_peft_model(qwen2_audio_model(), config)
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn_like(param))
    adapted.save_pretrained(path)


def merge_adapter_by_hand(model: torch.nn.Module, adapter_dir: str | os.PathLike) -> None:
    """W += (alpha / r) B A for every factor pair in the adapter files, in place: the formula,
    independent of PEFT and of sallm_jax. Keys may use the Hub layout
    (`language_model.model.layers...`) or transformers 5.x's (`model.language_model.layers...`).
    """
    from safetensors.torch import load_file

    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        config = json.load(f)
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            if name not in modules:
                name = name.replace("language_model.model.", "model.language_model.", 1)
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            modules[name].weight += scaling * (b @ a)


def merged_qwen2_audio(adapter_dir: str | os.PathLike) -> torch.nn.Module:
    """`qwen2_audio_model()` with the adapter merged by `merge_adapter_by_hand`."""
    model = qwen2_audio_model()
    merge_adapter_by_hand(model, adapter_dir)
    return model


def write_adapter(
    path: str | os.PathLike, shapes: dict[str, tuple[int, int]], *, rank: int, alpha: float
) -> None:
    """Writes a PEFT adapter by hand: for each module name -> (in, out), lora_A [rank, in] and
    lora_B [out, rank] from N(0, 0.2) (seeded by the caller), keys `base_model.model.NAME...`."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (d_in, d_out) in shapes.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = 0.2 * torch.randn(rank, d_in)
        tensors[f"base_model.model.{name}.lora_B.weight"] = 0.2 * torch.randn(d_out, rank)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": rank, "lora_alpha": alpha}, f)


def save_granite_speech(path: str | os.PathLike, seed: int = 0) -> torch.nn.Module:
    """A tiny random Granite Speech model (the config of test_granite_parity.py: 3 conformer
    blocks, 3 Q-Former layers, 2 Granite layers of width 32, vocab 100, audio token 99), saved
    with `save_pretrained` and returned."""
    try:  # tests/models is on sys.path when pytest collected it, else reach it via the package
        from test_granite_parity import hf_config
    except ImportError:
        from tests.models.test_granite_parity import hf_config

    torch.manual_seed(seed)
    model = transformers.GraniteSpeechForConditionalGeneration(hf_config()).eval()
    randomise(model)
    model.save_pretrained(path)
    return model


def qwen2_audio_inputs(seed: int = 0):
    """Two clips (200 and 130 valid frames) and left-padded prompts with expanded placeholders.

    Returns:
      features [2, FRAMES, MEL_BINS] float32, lengths [2] int32, input_ids [2, seq] int32,
      attention_mask [2, seq] int32.
    """
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, FRAMES, MEL_BINS)).astype(np.float32)
    # What the extractor leaves past a clip's end: a constant floor, as for zero-padded audio.
    features[1, LENGTHS[1] :] = -0.75
    rows = []
    for n_audio, n_suffix in zip(audio_token_count(np.array(LENGTHS)), (8, 12), strict=True):
        prefix = rng.integers(1, AUDIO_ID, size=3)
        suffix = rng.integers(1, AUDIO_ID, size=n_suffix)
        rows.append(np.concatenate([prefix, np.full(n_audio, AUDIO_ID), suffix]))
    seq = max(len(r) for r in rows)
    input_ids = np.full((2, seq), PAD_ID, np.int32)
    attention_mask = np.zeros((2, seq), np.int32)
    for b, row in enumerate(rows):
        input_ids[b, seq - len(row) :] = row
        attention_mask[b, seq - len(row) :] = 1
    return features, np.array(LENGTHS, np.int32), input_ids, attention_mask


def hf_logits(model: torch.nn.Module, features, lengths, input_ids, attention_mask) -> np.ndarray:
    """transformers logits [batch, seq, vocab] for `qwen2_audio_inputs`-style arrays.

    Positions are passed explicitly (cumsum of the mask - 1), as ours count them, so that left
    padding does not shift RoPE.
    """
    frames = features.shape[1]
    feature_mask = (np.arange(frames)[None, :] < lengths[:, None]).astype(np.int64)
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            input_features=torch.from_numpy(features.transpose(0, 2, 1).copy()),
            feature_attention_mask=torch.from_numpy(feature_mask),
            position_ids=torch.from_numpy(positions).long(),
        )
    return out.logits.float().numpy()


def jax_model(path):
    """Our model of a checkpoint directory, read as a run reads it (`load_checkpoint`)."""
    return load_checkpoint(path).model


def read_tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory (one file, or an index and shards)."""
    with SafetensorsDir(path) as tensors:
        return {key: tensors[key] for key in tensors}
