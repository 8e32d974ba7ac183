"""A complete random-weight checkpoint directory at a published model's config.

    sallm-jax random-checkpoint --preset granite_speech_2b --dtype bfloat16 --out DIR
    sallm-jax random-checkpoint --preset qwen2_audio_7b --layers 8 --out DIR

Every file the published one holds, read alike by a run, `load_checkpoint` and transformers:
config.json, model.safetensors (N(0, 0.02) weights, norm scales 1, BatchNorm statistics 0 and 1, in
`--dtype`, one block in memory at a time; the published vocabulary size), a small byte-level BPE
over the embedded sets' text with the family's special tokens, the family's chat template verbatim
(transformers' `Qwen2AudioProcessor.default_chat_template`; Granite 3.3 instruct's, as llama.cpp's
models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja), processor and generation configs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import time
from collections.abc import Iterator, Sequence

import ml_dtypes
import numpy as np

TEMPLATES = pathlib.Path(__file__).parents[1] / "models"
BPE_VOCAB = 640
_BLOCK_ELEMENTS = 16 << 20  # random values drawn per block


@dataclasses.dataclass(frozen=True)
class TokenizerLayout:
    """Special tokens: `leading` (ids 0..), `roles` (bos / eos / pad / unk), `extra` (after)."""

    leading: tuple[str, ...]
    roles: dict[str, str]
    extra: tuple[str, ...]
    template: str  # the chat template file under models/


LAYOUTS = {
    "qwen2_audio": TokenizerLayout(
        leading=(), roles={"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
        extra=("<|im_start|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
        template="qwen2_audio/chat_template.jinja"),
    "granite_speech": TokenizerLayout(
        leading=("<|end_of_text|>",),
        roles={role: "<|end_of_text|>" for role in ("bos_token", "eos_token", "pad_token",
                                                    "unk_token")},
        extra=("<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>", "<|audio|>"),
        template="granite_speech/chat_template.jinja"),
}


def chat_template(model_type: str) -> str:
    """The family's published chat template (see the module docstring)."""
    return (TEMPLATES / LAYOUTS[model_type].template).read_text()


def family_tokenizer(model_type: str):
    """A byte-level BPE over the embedded sets' text with the family's `LAYOUTS` tokens."""
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from sallm_jax.data.embedded_text import embedded_texts

    layout = LAYOUTS[model_type]
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=list(layout.leading),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(embedded_texts(seed=5, draws=300), trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                                     clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({**layout.roles,
                                  "additional_special_tokens": list(layout.extra)})
    tokenizer.chat_template = chat_template(model_type)
    return tokenizer


def _write_json(path: pathlib.Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_processor_files(path: pathlib.Path, model_type: str, tokenizer,
                          num_mel_bins: int) -> None:
    """The tokenizer, chat template, processor and generation configs of a `model_type` folder."""
    tokenizer.save_pretrained(path)
    (path / "chat_template.jinja").write_text(tokenizer.chat_template)
    ids = tokenizer.convert_tokens_to_ids
    if model_type == "qwen2_audio":
        import transformers

        transformers.WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(path)
        _write_json(path / "processor_config.json", {"processor_class": "Qwen2AudioProcessor"})
        ends = [ids("<|endoftext|>"), ids("<|im_end|>")]
        generation = {"bos_token_id": ends[0], "eos_token_id": ends, "pad_token_id": ends[0],
                      "do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.7}
    else:
        # GraniteSpeechFeatureExtractor needs torchaudio to be built: its settings written out.
        _write_json(path / "preprocessor_config.json", {
            "feature_extractor_type": "GraniteSpeechFeatureExtractor",
            "processor_class": "GraniteSpeechProcessor", "sampling_rate": 16000,
            "melspec_kwargs": {"sample_rate": 16000, "n_fft": 512, "win_length": 400,
                               "hop_length": 160, "n_mels": num_mel_bins},
            "projector_window_size": 15, "projector_downsample_rate": 5})
        _write_json(path / "processor_config.json", {
            "processor_class": "GraniteSpeechProcessor", "audio_token": "<|audio|>"})
        end = ids("<|end_of_text|>")
        generation = {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end}
    _write_json(path / "generation_config.json", generation)


def _filled(value: float, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    yield np.full(shape, value, np.float32)


def _normal(shape: tuple[int, ...], seed: int) -> Iterator[np.ndarray]:
    """N(0, 0.02) float32 rows of `shape`, about `_BLOCK_ELEMENTS` values at a time."""
    rng = np.random.default_rng(seed)
    row = math.prod(shape[1:])
    step = max(1, _BLOCK_ELEMENTS // max(row, 1))
    for first in range(0, shape[0], step):
        rows = min(step, shape[0] - first)
        yield 0.02 * rng.standard_normal((rows, *shape[1:]), np.float32)


def _values(key: str, shape: tuple[int, ...], seed: int):
    """The draw for tensor `key`: norm scales 1, BatchNorm statistics 0 and 1, else N(0, 0.02)."""
    name = key.rsplit(".", 1)[-1]
    if name == "running_var" or (name == "weight" and "norm" in key.lower()):
        return functools.partial(_filled, 1.0, shape)
    if name in ("running_mean", "bias") and "norm" in key.lower():
        return functools.partial(_filled, 0.0, shape)
    return functools.partial(_normal, shape, seed)


def write_random_weights(path: pathlib.Path, config, dtype: str, seed: int = 0) -> int:
    """Random `dtype` weights of `config` to `path` (config.json, model.safetensors); # params."""
    from flax import nnx

    from sallm_jax.models.families import family_for_config
    from sallm_jax.models.hub.safetensors_io import write_safetensors

    family = family_for_config(config)
    model = nnx.eval_shape(lambda: family.model_class(config, rngs=nnx.Rngs(0)))
    stored = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    specs, count = [], 0
    for index, (key, (param_path, transform)) in enumerate(sorted(family.param_map(
            config).items())):
        node = model
        for part in param_path:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        shape = tuple(node.get_value().shape)
        shape = shape if transform == "copy" else shape[::-1]
        count += math.prod(shape)
        specs.append((key, shape, stored, _values(key, shape, seed + index)))
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "config.json", family.config_to_hf(config))
    write_safetensors(str(path / "model.safetensors"), specs, metadata={"format": "pt"})
    return count


def preset_config(preset: str, layers: int | None = None, encoder_layers: int | None = None):
    """The preset's config with `layers` decoder and `encoder_layers` encoder layers when given."""
    from sallm_jax.models.presets import get_preset

    config = get_preset(preset)
    if layers is not None:
        config = dataclasses.replace(config, text=dataclasses.replace(
            config.text, num_hidden_layers=layers))
    if encoder_layers is not None:
        field = "audio" if hasattr(config, "audio") else "encoder"
        encoder = getattr(config, field)
        name = "encoder_layers" if field == "audio" else "num_layers"
        config = dataclasses.replace(config, **{field: dataclasses.replace(
            encoder, **{name: encoder_layers})})
    return config


def write_random_checkpoint(out: str | pathlib.Path, preset: str, *, layers: int | None = None,
                            encoder_layers: int | None = None, dtype: str = "bfloat16",
                            seed: int = 0) -> dict:
    """Writes the whole directory (module docstring); returns parameters, bytes and seconds."""
    from sallm_jax.models.families import family_for_config

    start = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = preset_config(preset, layers, encoder_layers)
    family = family_for_config(config)
    tokenizer = family_tokenizer(family.model_type)
    config = dataclasses.replace(
        config, audio_token_id=tokenizer.convert_tokens_to_ids(family.audio_token))
    num_mel_bins = family.input_width(config) // family.frames_per_input
    write_processor_files(out, family.model_type, tokenizer, num_mel_bins)
    count = write_random_weights(out, config, dtype, seed)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"preset": preset, "num_params": count, "bytes": size, "dtype": dtype,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Sequence[str] | None = None) -> None:
    from sallm_jax.models.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m sallm_jax.commands.random_checkpoint",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="the checkpoint directory to write")
    parser.add_argument("--layers", type=int, default=None,
                        help="decoder layers (default: the preset's)")
    parser.add_argument("--encoder_layers", type=int, default=None,
                        help="audio-encoder layers (default: the preset's)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(write_random_checkpoint(args.out, args.preset, layers=args.layers,
                                             encoder_layers=args.encoder_layers,
                                             dtype=args.dtype, seed=args.seed)))


if __name__ == "__main__":
    main()
