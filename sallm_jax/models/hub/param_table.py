"""Hub key -> (variable path, layout conversion) tables, walked by every family's reader and writer.

Conversions: torch Linear weight [out, in] -> Flax kernel [in, out] ("linear"); Conv1d weight [out,
in, k] -> Flax conv kernel [k, in, out] ("conv"); everything else as stored ("copy": norm weight ->
scale, Embedding weight -> embedding, biases).
"""

from __future__ import annotations

from typing import Literal

from sallm_jax.models.paths import ParamPath
from sallm_jax.models.qwen2_config import TextConfig

Transform = Literal["copy", "linear", "conv"]


def hub_key(key: str) -> str:
    """A transformers 5.x in-memory state-dict key in the Hub layout, for either family (Hub keys
    pass unchanged): `model.language_model.*` -> `language_model.model.*`, `model.<tower>.*` ->
    `<tower>.*`, `lm_head.weight` -> `language_model.lm_head.weight`."""
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model.") :]
    if key.startswith("model."):
        return key[len("model.") :]
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    return key


class ParamTable(dict[str, tuple[ParamPath, Transform]]):
    """Hub key -> (variable path, layout conversion), filled one torch module at a time."""

    def _weight_and_bias(
        self, hub: str, path: ParamPath, name: str, transform: Transform, bias: bool
    ) -> None:
        self[f"{hub}.weight"] = ((*path, name), transform)
        if bias:
            self[f"{hub}.bias"] = ((*path, "bias"), "copy")

    def linear(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch Linear `hub` -> the nnx.Linear at `path`."""
        self._weight_and_bias(hub, path, "kernel", "linear", bias)

    def conv(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch Conv1d `hub` -> the nnx.Conv at `path`."""
        self._weight_and_bias(hub, path, "kernel", "conv", bias)

    def norm(self, hub: str, path: ParamPath, bias: bool = True) -> None:
        """torch LayerNorm / RMSNorm / BatchNorm1d affine `hub` -> the norm at `path` (scale)."""
        self._weight_and_bias(hub, path, "scale", "copy", bias)

    def decoder(self, text: TextConfig, *, qkv_bias: bool) -> None:
        """`language_model.*` of a Qwen2 / Granite decoder: q/k/v biases when `qkv_bias`, the LM
        head only when not tied."""
        lm = "language_model.model"
        embed = ("language_model", "embed_tokens", "embedding")
        self[f"{lm}.embed_tokens.weight"] = (embed, "copy")
        for i in range(text.num_hidden_layers):
            hub, path = f"{lm}.layers.{i}", ("language_model", "layers", i)
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                bias = qkv_bias and proj != "o_proj"
                self.linear(f"{hub}.self_attn.{proj}", (*path, "self_attn", proj), bias=bias)
            for proj in ("gate_proj", "up_proj", "down_proj"):
                self.linear(f"{hub}.mlp.{proj}", (*path, "mlp", proj), bias=False)
            self.norm(f"{hub}.input_layernorm", (*path, "input_layernorm"), bias=False)
            self.norm(
                f"{hub}.post_attention_layernorm", (*path, "post_attention_layernorm"), bias=False
            )
        self.norm(f"{lm}.norm", ("language_model", "norm"), bias=False)
        if not text.tie_word_embeddings:
            self.linear("language_model.lm_head", ("language_model", "lm_head"), bias=False)
