"""Tiny random transformers checkpoints of every registered family, the batch the comparisons
feed them, and the helpers the model tests share.

A family registered in `sallm_jax.models.families` is compared with transformers once it has an
entry in `TINY_CHECKPOINTS` (and its JAX-only tests run once it has one in `tiny.TINY`). Import
only from tests that have already checked that torch and transformers are installed; this module
imports nothing from `tests`, so that scripts may import it as `hf_tiny`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import torch
import transformers

from sallm_jax.models.families import family_for_hf_config, family_for_type
from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.models.hub.safetensors_io import SafetensorsDir

PAD_ID = 0
HOP = 160  # 16 kHz samples per log-mel frame


def qwen2_audio_config(**top) -> transformers.Qwen2AudioConfig:
    """2+2 layers, width 64, GQA (4 heads over 2 KV heads), 80 mels, vocab 300, audio id 299;
    RMSNorm epsilon and RoPE theta off their defaults, so that reading them is tested. `top`
    sets top-level fields."""
    return transformers.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=80, d_model=64,
                          encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                          max_source_positions=100),  # 200 frames: the one length it accepts
        text_config=dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         vocab_size=300, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000.0}),
        audio_token_index=299, **top)


def granite_speech_config(**top) -> transformers.GraniteSpeechConfig:
    """3 conformer blocks, 3 Q-Former layers, 2 Granite layers of width 32, vocab 100, audio
    id 99; the encoder's dim_head left to its default (hidden_dim // num_heads). `top` sets
    top-level fields (the head is tied unless tie_word_embeddings=False)."""
    return transformers.GraniteSpeechConfig(
        # 3 blocks: self-conditioning after block 1, then two more; an even convolution kernel
        # pads its depthwise convolution asymmetrically (2, 1).
        encoder_config=dict(input_dim=160, num_layers=3, hidden_dim=32, feedforward_mult=2,
                            num_heads=4, output_dim=10, context_size=8, max_pos_emb=10,
                            conv_kernel_size=4, conv_expansion_factor=2),
        # Cross-attention every 2 layers: layers 0 and 2 cross-attend, layer 1 does not.
        projector_config=dict(model_type="blip_2_qformer", hidden_size=24, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=40,
                              encoder_hidden_size=32, cross_attention_frequency=2),
        text_config=dict(model_type="granite", hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                         vocab_size=100, embedding_multiplier=3.0, attention_multiplier=0.3,
                         residual_multiplier=0.5, logits_scaling=4.0,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000.0}),
        audio_token_index=99, has_lora_adapter=False, **top)


@dataclasses.dataclass(frozen=True)
class TinyCheckpoint:
    """A family's tiny transformers model and the two-clip batch the comparisons feed it.

    Attributes:
      hf_config: top-level fields -> the transformers config.
      clip_samples: 16 kHz samples of the two clips; their feature frames are the batch's
        lengths, the first also its frame count.
      suffixes: text ids after each row's audio placeholders.
      prefill_cuts: the ends of the cached-decoding test's two prefill chunks; one token at a
        time follows.
    """

    hf_config: Callable[..., transformers.PretrainedConfig]
    clip_samples: tuple[int, int]
    suffixes: tuple[int, int]
    prefill_cuts: tuple[int, int]


TINY_CHECKPOINTS = {
    "qwen2_audio": TinyCheckpoint(qwen2_audio_config, clip_samples=(200 * HOP, 130 * HOP - 37),
                                  suffixes=(8, 12), prefill_cuts=(40, 45)),  # 200, 130 frames
    "granite_speech": TinyCheckpoint(granite_speech_config,
                                     clip_samples=(73 * HOP + 11, 39 * HOP),  # 37, 20 frames
                                     suffixes=(5, 9), prefill_cuts=(12, 16)),
}


def hf_class(model_type: str) -> type:
    """The transformers class of `model_type`'s checkpoints."""
    return getattr(transformers, family_for_type(model_type).architecture)


def jax_config(model_type: str):
    """Our config of the tiny checkpoint, as its config.json is read."""
    hf_config = TINY_CHECKPOINTS[model_type].hf_config()
    return family_for_type(model_type).config_from_hf(hf_config.to_dict())


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


def tiny_hf_model(model_type: str, seed: int = 0, std: float = 0.1, **top) -> torch.nn.Module:
    """The tiny model in eval mode with `randomise`d weights (seeded); `top` sets config fields."""
    torch.manual_seed(seed)
    model = hf_class(model_type)(TINY_CHECKPOINTS[model_type].hf_config(**top)).eval()
    randomise(model, std)
    return model


def save_checkpoint(path: str | os.PathLike, model_type: str, seed: int = 0, std: float = 0.1,
                    **top) -> torch.nn.Module:
    """Writes `tiny_hf_model` with `save_pretrained` and returns it."""
    model = tiny_hf_model(model_type, seed, std, **top)
    model.save_pretrained(path)
    return model


def save_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny Qwen2-Audio vocabulary ("w{i}"), with `<|AUDIO|>` at
    its audio id and a Qwen2-Audio-style chat template, saved to `path` and returned."""
    import tokenizers

    config = qwen2_audio_config()
    audio_id = config.audio_token_index
    vocab = {f"w{i}": i for i in range(config.text_config.vocab_size)}
    vocab["<|AUDIO|>"] = audio_id
    del vocab[f"w{audio_id}"]
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
) -> torch.nn.Module:
    """Writes the tiny Qwen2-Audio model (`save_checkpoint`; plus, optionally, a tokenizer and a
    Whisper feature-extractor config) and returns it."""
    model = save_checkpoint(path, "qwen2_audio", seed)
    if with_processor_files:
        save_tokenizer(path)
        mel_bins = model.config.audio_config.num_mel_bins
        transformers.WhisperFeatureExtractor(feature_size=mel_bins).save_pretrained(path)
    return model


def adapter_shapes(text_config, layers: str = "language_model.model.layers"
                   ) -> dict[str, tuple[int, int]]:
    """Module name -> (in, out) of every q_proj and v_proj of a transformers text config's
    decoder, named under `layers` (the Hub's layout by default)."""
    hidden = text_config.hidden_size
    kv = text_config.num_key_value_heads * hidden // text_config.num_attention_heads
    return {f"{layers}.{i}.self_attn.{proj}": (hidden, out)
            for i in range(text_config.num_hidden_layers)
            for proj, out in (("q_proj", hidden), ("v_proj", kv))}


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


def save_peft_adapter(path: str | os.PathLike, *, rank: int, alpha: float, seed: int = 1) -> None:
    """Saves a LoRA adapter for the tiny Qwen2-Audio model on the language model's q_proj /
    v_proj, with A and B drawn from N(0, 0.2) (PEFT starts B at zero, which would test nothing).

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
        shapes = adapter_shapes(qwen2_audio_config().text_config, "model.language_model.layers")
        write_adapter(path, shapes, rank=rank, alpha=alpha)
        return
    # The regex keeps PEFT off the Whisper encoder's q_proj / v_proj, as apply_lora's scope does.
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
    )
    adapted = peft.get_peft_model(tiny_hf_model("qwen2_audio"), config)
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


def merged_model(model_type: str, adapter_dir: str | os.PathLike) -> torch.nn.Module:
    """`tiny_hf_model(model_type)` with the adapter merged by `merge_adapter_by_hand`."""
    model = tiny_hf_model(model_type)
    merge_adapter_by_hand(model, adapter_dir)
    return model


def batch(model_type: str, seed: int = 0):
    """Two clips (the entry's `clip_samples` in feature frames) and left-padded prompts with
    their placeholders expanded: 3 text ids, the clip's audio tokens, then `suffixes` text ids.

    Returns:
      features [2, frames, width] float32, lengths [2] int32, input_ids [2, seq] int32,
      attention_mask [2, seq] int32.
    """
    tiny, family = TINY_CHECKPOINTS[model_type], family_for_type(model_type)
    config = jax_config(model_type)
    lengths = np.asarray(family.feature_frames(np.array(tiny.clip_samples)), np.int32)
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, lengths[0], family.input_width(config))).astype(np.float32)
    # What the extractor leaves past a clip's end: a constant floor, as for zero-padded audio.
    features[1, lengths[1] :] = -0.75
    audio_id = config.audio_token_id
    rows = []
    for n_audio, n_suffix in zip(family.audio_tokens(config, lengths), tiny.suffixes,
                                 strict=True):
        prefix = rng.integers(1, audio_id, size=3)
        suffix = rng.integers(1, audio_id, size=n_suffix)
        rows.append(np.concatenate([prefix, np.full(n_audio, audio_id), suffix]))
    input_ids, attention_mask = left_pad(rows)
    return features, lengths, input_ids, attention_mask


def left_pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, longest] int32 padded on the left with PAD_ID, their mask)."""
    seq = max(len(r) for r in rows)
    ids = np.full((len(rows), seq), PAD_ID, np.int32)
    mask = np.zeros((len(rows), seq), np.int32)
    for b, row in enumerate(rows):
        ids[b, seq - len(row) :] = row
        mask[b, seq - len(row) :] = 1
    return ids, mask


def hf_audio_inputs(model: torch.nn.Module, features, lengths) -> dict[str, torch.Tensor]:
    """transformers' audio keyword arguments for our features [clips, frames, width] and
    their valid frames, as `model`'s family passes them."""
    family = family_for_hf_config(model.config.to_dict())
    config = family.config_from_hf(model.config.to_dict())
    lengths = np.asarray(lengths)
    audio = family.reference_audio_inputs(np.asarray(features), lengths,
                                          np.asarray(family.audio_tokens(config, lengths)))
    return {name: torch.from_numpy(np.array(array)) for name, array in audio.items()}


def hf_logits(model: torch.nn.Module, features, lengths, input_ids, attention_mask) -> np.ndarray:
    """transformers logits [batch, seq, vocab] for `batch`-style arrays.

    Positions are passed explicitly (cumsum of the mask - 1), as ours count them, so that left
    padding does not shift RoPE.
    """
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            position_ids=torch.from_numpy(positions).long(),
            **hf_audio_inputs(model, features, lengths),
        )
    return out.logits.float().numpy()


def parity_models(model_type: str, path: str | os.PathLike):
    """(tiny hf model saved to `path`, ours loaded from it, `batch`, hf outputs): the outputs
    are the logits and what transformers' audio encoder ("encoder") and projector ("audio")
    returned for the batch's clips."""
    hf = save_checkpoint(path, model_type)
    family = family_for_type(model_type)
    inputs = batch(model_type)
    captured = {}

    def keep(name):
        def hook(module, args, out):
            # Returning None leaves the forward untouched.
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
            captured[name] = out.detach().numpy()

        return hook

    hooks = [getattr(hf.model, family.encoder).register_forward_hook(keep("encoder")),
             getattr(hf.model, family.projector).register_forward_hook(keep("audio"))]
    logits = hf_logits(hf, *inputs)
    for hook in hooks:
        hook.remove()
    return hf, jax_model(path), inputs, {"logits": logits, **captured}


def jax_model(path):
    """Our model of a checkpoint directory, read as a run reads it (`load_checkpoint`)."""
    return load_checkpoint(path).model


def read_tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory (one file, or an index and shards)."""
    with SafetensorsDir(path) as tensors:
        return {key: tensors[key] for key in tensors}
