"""Granite Speech checkpoints (config.json + safetensors) -> `GraniteSpeechLM`, and its config.json.

Hub keys as transformers 5.23's `save_pretrained` writes them (5.x `state_dict()` keys renamed by
`param_table.hub_key`); BatchNorm1d running_mean/var -> `nnx.BatchStat`s; `num_batches_tracked` is
skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from sallm_jax.models.granite_speech.config import (
    GraniteEncoderConfig,
    GraniteProjectorConfig,
    GraniteSpeechConfig,
    GraniteTextConfig,
)
from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from sallm_jax.models.hub.assign import assign_tensors
from sallm_jax.models.hub.hf_config import hf_rope
from sallm_jax.models.hub.param_table import ParamTable, Transform, hub_key
from sallm_jax.models.paths import ParamPath

# config.json may spell encoder fields by their transformers attribute_map aliases.
_ENCODER_ALIASES = {
    "hidden_size": "hidden_dim",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_mel_bins": "input_dim",
}
_LM_HEAD = "language_model.lm_head.weight"
_EMBED = "language_model.model.embed_tokens.weight"


def _known_fields(cls, values: Mapping, exclude: tuple[str, ...] = ()) -> dict:
    """Fields of dataclass `cls` present in `values`; absent ones keep the class defaults."""
    names = {f.name for f in cls.__dataclass_fields__.values()} - set(exclude)
    return {k: v for k, v in values.items() if k in names}


def granite_speech_config_from_hf(
    hf_config: Mapping, *, apply_logits_scaling: bool = False
) -> GraniteSpeechConfig:
    """A Granite Speech `config.json` dict as a `GraniteSpeechConfig`.

    Left-out fields take transformers 5.23's defaults; rope theta comes from `rope_parameters` (5.x)
    or `rope_theta` (4.x); the head is tied by the top-level `tie_word_embeddings` (default true).
    NotImplementedError for a sub-model type, activation, bias, rope type or head_dim not modelled.
    """
    encoder = dict(hf_config.get("encoder_config") or {})
    for alias, name in _ENCODER_ALIASES.items():
        if alias in encoder:
            encoder.setdefault(name, encoder.pop(alias))
    projector = dict(hf_config.get("projector_config") or {})
    text = dict(hf_config.get("text_config") or {})

    for section, values, expected in (
        ("projector_config", projector, "blip_2_qformer"),
        ("text_config", text, "granite"),
    ):
        if values.get("model_type", expected) != expected:
            raise NotImplementedError(
                f"{section}.model_type={values['model_type']!r} (expected {expected!r})"
            )
    if projector.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError(f"projector_config.hidden_act={projector['hidden_act']!r}")
    if projector.get("use_qformer_text_input"):
        raise NotImplementedError("projector_config.use_qformer_text_input=true is not supported")
    if text.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"text_config.hidden_act={text['hidden_act']!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if text.get(flag):
            raise NotImplementedError(f"text_config.{flag}=true is not supported")
    if text.get("rope_scaling"):
        raise NotImplementedError(f"text_config.rope_scaling={text['rope_scaling']!r}")
    rope = text.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise NotImplementedError(f"text_config.rope_parameters.rope_type={rope_type!r}")
    text_fields = _known_fields(
        GraniteTextConfig, text, exclude=("tie_word_embeddings", "apply_logits_scaling")
    )
    if "rope_theta" in rope:
        text_fields["rope_theta"] = rope["rope_theta"]
    text_config = GraniteTextConfig(
        **text_fields,
        tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", True)),
        apply_logits_scaling=apply_logits_scaling,
    )
    head_dim = text.get("head_dim")
    if head_dim is not None and head_dim != text_config.head_dim:
        raise NotImplementedError(
            f"text_config.head_dim={head_dim} differs from hidden_size / num_attention_heads"
        )
    top = _known_fields(GraniteSpeechConfig, hf_config, exclude=("encoder", "projector", "text"))
    if "audio_token_index" in hf_config:
        top["audio_token_id"] = hf_config["audio_token_index"]
    return GraniteSpeechConfig(
        encoder=GraniteEncoderConfig(
            **_known_fields(
                GraniteEncoderConfig, encoder, exclude=("layer_norm_eps", "batch_norm_eps")
            )
        ),
        projector=GraniteProjectorConfig(**_known_fields(GraniteProjectorConfig, projector)),
        text=text_config,
        **top,
    )


def load_granite_config(
    path: str | os.PathLike, *, apply_logits_scaling: bool = False
) -> GraniteSpeechConfig:
    """Reads `config.json` of a checkpoint directory into a `GraniteSpeechConfig`."""
    with open(os.path.join(os.fspath(path), "config.json")) as f:
        return granite_speech_config_from_hf(
            json.load(f), apply_logits_scaling=apply_logits_scaling
        )


def granite_speech_config_to_hf(config: GraniteSpeechConfig) -> dict:
    """The `config.json` dict of `config`: the inverse of `granite_speech_config_from_hf`."""
    text = dataclasses.asdict(config.text)
    tie = text.pop("tie_word_embeddings")
    text.pop("apply_logits_scaling")  # ours, not a transformers field
    encoder = dataclasses.asdict(config.encoder)
    for key in ("layer_norm_eps", "batch_norm_eps"):  # torch module defaults, not fields
        encoder.pop(key)
    return {
        "model_type": "granite_speech",
        "architectures": ["GraniteSpeechForConditionalGeneration"],
        "audio_token_index": config.audio_token_id,
        "window_size": config.window_size,
        "downsample_rate": config.downsample_rate,
        "has_lora_adapter": False,
        "encoder_config": {"model_type": "granite_speech_encoder", **encoder},
        "projector_config": {
            "model_type": "blip_2_qformer",
            **dataclasses.asdict(config.projector),
        },
        "text_config": {"model_type": "granite", **hf_rope(text)},
        # 5.23's speech wrapper ties its head by the top-level flag.
        "tie_word_embeddings": tie,
    }


def granite_param_map(config: GraniteSpeechConfig) -> dict[str, tuple[ParamPath, Transform]]:
    """Hub key -> (`GraniteSpeechLM` variable path, layout conversion) for every tensor it reads."""
    table = ParamTable()
    table.linear("encoder.input_linear", ("encoder", "input_linear"))
    for i in range(config.encoder.num_layers):
        hub, path = f"encoder.layers.{i}", ("encoder", "layers", i)
        for ff in ("ff1", "ff2"):
            table.norm(f"{hub}.{ff}.pre_norm", (*path, ff, "pre_norm"))
            table.linear(f"{hub}.{ff}.up_proj", (*path, ff, "up_proj"))
            table.linear(f"{hub}.{ff}.down_proj", (*path, ff, "down_proj"))
        attn = (*path, "attn")
        table.norm(f"{hub}.attn.pre_norm", (*attn, "pre_norm"))
        table.linear(f"{hub}.attn.to_q", (*attn, "to_q"), bias=False)
        table.linear(f"{hub}.attn.to_kv", (*attn, "to_kv"), bias=False)
        table.linear(f"{hub}.attn.to_out", (*attn, "to_out"))
        table[f"{hub}.attn.rel_pos_emb.weight"] = ((*attn, "rel_pos_emb", "embedding"), "copy")
        cm = (*path, "conv")
        table.norm(f"{hub}.conv.norm", (*cm, "norm"))
        table.conv(f"{hub}.conv.up_conv", (*cm, "up_conv"))
        table.conv(f"{hub}.conv.depth_conv.conv", (*cm, "depth_conv"), bias=False)
        table.norm(f"{hub}.conv.batch_norm", (*cm, "batch_norm"))
        table[f"{hub}.conv.batch_norm.running_mean"] = ((*cm, "batch_norm", "mean"), "copy")
        table[f"{hub}.conv.batch_norm.running_var"] = ((*cm, "batch_norm", "var"), "copy")
        table.conv(f"{hub}.conv.down_conv", (*cm, "down_conv"))
        table.norm(f"{hub}.post_norm", (*path, "post_norm"))
    table.linear("encoder.out", ("encoder", "out"))
    table.linear("encoder.out_mid", ("encoder", "out_mid"))

    table["projector.query"] = (("projector", "query"), "copy")
    table.norm("projector.qformer.layernorm", ("projector", "layernorm"))
    pc = config.projector
    for i in range(pc.num_hidden_layers):
        hub, path = f"projector.qformer.encoder.layer.{i}", ("projector", "layers", i)
        blocks = ["attention"]
        if i % pc.cross_attention_frequency == 0:
            blocks.append("crossattention")
        for block in blocks:
            for proj in ("query", "key", "value"):
                table.linear(f"{hub}.{block}.attention.{proj}", (*path, block, proj))
            table.linear(f"{hub}.{block}.output.dense", (*path, block, "dense"))
            table.norm(f"{hub}.{block}.output.LayerNorm", (*path, block, "norm"))
        table.linear(f"{hub}.intermediate_query.dense", (*path, "intermediate"))
        table.linear(f"{hub}.output_query.dense", (*path, "output"))
        table.norm(f"{hub}.output_query.LayerNorm", (*path, "output_norm"))
    table.linear("projector.linear", ("projector", "linear"))
    table.decoder(config.text, qkv_bias=False)
    return table


def load_granite_state_dict(
    model: GraniteSpeechLM, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> GraniteSpeechLM:
    """Copies a transformers Granite Speech state dict into `model`, in place (as `assign_tensors`).

    With tied embeddings a `language_model.lm_head.weight` equal to them is ignored; one that
    differs is a ValueError (set config.json's top-level `tie_word_embeddings` to false for it), as
    is every missing key, unexpected key and shape mismatch.
    """
    keys = {hub_key(k): k for k in state_dict if not k.endswith(".num_batches_tracked")}
    if model.config.text.tie_word_embeddings and _LM_HEAD in keys:
        head = np.asarray(state_dict[keys.pop(_LM_HEAD)])
        embed = np.asarray(state_dict[keys[_EMBED]]) if _EMBED in keys else None
        if embed is None or head.shape != embed.shape or not np.array_equal(head, embed):
            raise ValueError(
                f"cannot load {source} into GraniteSpeechLM: {_LM_HEAD} differs from {_EMBED} "
                "but the config ties them (top-level tie_word_embeddings=true)"
            )
    return assign_tensors(model, granite_param_map(model.config), state_dict, keys, source=source)
