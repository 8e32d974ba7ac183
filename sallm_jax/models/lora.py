"""Low-rank adapters (LoRA) on the `nnx.Linear` layers of any model in this package.

W' = W + (alpha / r) B A in PEFT's PyTorch layout (lora_A [r, in], lora_B [out, r]); here, in
Flax layout, y = x W + (alpha / r) (x lora_a) lora_b with lora_a [in, r] = lora_A.T and
lora_b [r, out] = lora_B.T. Nothing here knows a model family: `apply_lora` matches submodules by
attribute name, so it wraps Qwen2-Audio's and Granite Speech's `q_proj` / `v_proj` alike.

Adapters are `LoRAParam`s, a subclass of `nnx.Param`, so the trainer splits them from the frozen
base weights with a filter (`trainable_filter`) and optax sees only what it should train.

Switching adapters off (the GRPO reference policy) needs no second copy of the base weights:
`LoRALinear.enabled` is a static Python attribute that the forward reads at trace time, and
`set_lora_enabled(model, False)` flips it (`rl.policy.merge_policy` does, for the reference).
Inside a jitted pure function:

    def ref_logits(graphdef, state, batch):
        model = nnx.merge(graphdef, state)      # the same arrays the policy uses
        set_lora_enabled(model, False)          # on this merged copy of the modules only
        return model(*batch)

Because the flag is static, the reference program contains no adapter matmuls at all; because it
lives on the module, it is part of the graphdef that `nnx.jit` keys its cache on, so a function
called once with adapters on and once off compiles two programs instead of reusing a stale one.

Training config knobs this module serves (names proposed for the experiment configs):
  model.lora.rank (0 = no LoRA), model.lora.alpha, model.lora.target_modules (attribute names,
  default ("q_proj", "v_proj")), model.lora.scope ("language_model" or None for the whole
  model), model.lora.adapter_dir (start from a PEFT adapter: `peft.load_peft_adapter`), and
  model.trainable, one of `trainable_filter`'s modes ("adapters", "adapters+projector",
  "adapters+projector+encoder", "all"). "adapters" on a model without LoRA selects nothing,
  which the config validation should reject.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from sallm_jax.models.families import families
from sallm_jax.models.layer_scan import LayerStack
from sallm_jax.models.paths import ParamPath, node_at, set_node_at


class LoRAParam(nnx.Param):
    """A LoRA factor: trainable while the base `nnx.Param`s stay frozen."""


def _kaiming_uniform_a_sqrt5(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    # PEFT initialises lora_A with torch's kaiming_uniform_(a=sqrt(5)), i.e. U(-b, b) with
    # b = 1 / sqrt(fan_in); matching it keeps learning rates transferable from PEFT recipes.
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class LoRALinear(nnx.Module):
    """An `nnx.Linear` plus a rank-`rank` update scaled by alpha / rank.

    Attributes:
      base: the wrapped nnx.Linear (kernel [in, out], optional bias [out]), frozen in training.
      lora_a: LoRAParam [in, rank], PEFT-style uniform init.
      lora_b: LoRAParam [rank, out], zeros, so a fresh adapter leaves the output unchanged.
      rank, alpha: Python numbers (static).
      enabled: static bool read by the forward; see `set_lora_enabled`.
    """

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, rngs: nnx.Rngs):
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.enabled = True
        d_in, d_out = base.in_features, base.out_features
        # The adapters are what trains: float32 master weights whatever the base's storage,
        # cast to the layer's compute dtype at use.
        dtype = jnp.float32
        # Sharding names follow the kernel's: lora_a shards like its input axis, lora_b like its
        # output axis; the rank axis is small and stays replicated. Like the base parameters, no
        # eager sharding, so that a model can be adapted without a mesh.
        meta = base.kernel.get_metadata()
        names = meta.get("out_sharding") or (None, None)
        eager = bool(meta.get("eager_sharding", False))
        self.lora_a = LoRAParam(
            _kaiming_uniform_a_sqrt5(rngs.params(), (d_in, self.rank), dtype),
            out_sharding=(names[0], None),
            eager_sharding=eager,
        )
        self.lora_b = LoRAParam(
            jnp.zeros((self.rank, d_out), dtype),
            out_sharding=(None, names[1]),
            eager_sharding=eager,
        )

    @property
    def scaling(self) -> float:
        """alpha / rank, the factor on B A."""
        return self.alpha / self.rank

    @property
    def kernel(self) -> nnx.Param:
        """The base kernel [in, out], so that weight maps written for `nnx.Linear` paths resolve."""
        return self.base.kernel

    @property
    def bias(self) -> nnx.Param | None:
        """The base bias [out] or None."""
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> jax.Array:
        """(alpha / rank) lora_a @ lora_b: [in, out] float32, the kernel update W' - W."""
        a = self.lora_a.get_value().astype(jnp.float32)
        b = self.lora_b.get_value().astype(jnp.float32)
        return self.scaling * (a @ b)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., in] -> [..., out] in the base layer's compute dtype."""
        y = self.base(x)
        if not self.enabled:
            return y
        dtype = y.dtype
        # Two thin matmuls instead of materialising the [in, out] delta: O(r (in + out)) per token.
        h = x.astype(dtype) @ self.lora_a.get_value().astype(dtype)
        return y + self.scaling * (h @ self.lora_b.get_value().astype(dtype))


def lora_modules(model: nnx.Module) -> Iterator[tuple[ParamPath, LoRALinear]]:
    """Yields (path, module) for every LoRALinear in `model`, in graph order."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, LoRALinear):
            yield tuple(path), module


def wrap_linear(
    model: nnx.Module, path: ParamPath, *, rank: int, alpha: float, rngs: nnx.Rngs
) -> LoRALinear:
    """Replaces the nnx.Linear at `path` with a LoRALinear around it (in place) and returns it.

    A path that already holds a LoRALinear gets fresh adapters of the new rank/alpha.
    """
    module = node_at(model, path)
    if isinstance(module, LoRALinear):
        module = module.base
    if not isinstance(module, nnx.Linear):
        raise TypeError(f"{'.'.join(map(str, path))} is a {type(module).__name__}, not nnx.Linear")
    wrapped = LoRALinear(module, rank=rank, alpha=alpha, rngs=rngs)
    set_node_at(model, path, wrapped)
    return wrapped


def apply_lora(
    model: nnx.Module,
    *,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    rngs: nnx.Rngs,
    scope: str | None = "language_model",
) -> nnx.Module:
    """Wraps every nnx.Linear whose attribute name is in `target_modules` with a LoRALinear.

    Args:
      model: any module (SpeechLM, GraniteSpeechLM, ...); changed in place and returned.
      rank, alpha: adapter rank r and alpha (the update is scaled by alpha / r).
      target_modules: attribute names to match anywhere in the tree (PEFT's list semantics).
      rngs: supplies the lora_a initialisation.
      scope: only match below this top-level attribute; the default keeps adapters off the
        audio encoder, whose Whisper layers also have q_proj / v_proj. None means the whole model.

    Raises:
      ValueError when nothing matches, a target is `lm_head` (the LMs read its kernel directly
      for the float32 logits einsum, so an adapter there would be silently ignored), or the
      layers are stored stacked (`set_scan_layers`; apply LoRA first).
    """
    if "lm_head" in target_modules:
        raise ValueError("lm_head cannot take a LoRA adapter: the LM reads its kernel directly")
    if any(isinstance(module, LayerStack) for _, module in nnx.iter_modules(model)):
        raise ValueError("LoRA goes on per-layer storage: apply it before set_scan_layers "
                         "stores the layers stacked")
    root = model if scope is None else getattr(model, scope)
    prefix: ParamPath = () if scope is None else (scope,)
    paths = [
        (*prefix, *path)
        for path, module in nnx.iter_modules(root)
        if path
        and isinstance(path[-1], str)
        and path[-1] in target_modules
        and isinstance(module, nnx.Linear)
    ]
    if not paths:
        raise ValueError(
            f"no nnx.Linear named any of {list(target_modules)} under "
            f"{scope or 'the model'} ({type(model).__name__})"
        )
    for path in paths:
        wrap_linear(model, path, rank=rank, alpha=alpha, rngs=rngs)
    return model


def set_lora_enabled(model: nnx.Module, enabled: bool) -> None:
    """Switches every adapter of `model` on or off (a static flag; see the module docstring)."""
    for _, module in lora_modules(model):
        module.enabled = bool(enabled)



def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its base kernel (W + (alpha / r) B A) and unwraps it, in place.

    The fold is computed in float32 and cast to the kernel's dtype. A disabled adapter is
    dropped without folding, so the merged model computes what the model computed before.
    Returns `model`, now free of LoRALinear.
    """
    for path, module in list(lora_modules(model)):
        base = module.base
        if module.enabled:
            kernel = base.kernel.get_value()
            merged = kernel.astype(jnp.float32) + module.delta()
            base.kernel.set_value(merged.astype(kernel.dtype))
        set_node_at(model, path, base)
    return model


TrainableMode = Literal["adapters", "adapters+projector", "adapters+projector+encoder", "all"]

def _under(names: Sequence[str]) -> nnx.filterlib.Filter:
    return lambda path, _: bool(path) and path[0] in names


def trainable_filter(mode: TrainableMode) -> nnx.filterlib.Filter:
    """nnx filter selecting the parameters a training run updates.

    Modes (the `model.trainable` config knob):
      "adapters": LoRAParam leaves only (the base model is frozen).
      "adapters+projector": also the projector (each family's `ModelFamily.projector`:
        `multi_modal_projector` / `projector`).
      "adapters+projector+encoder": also the audio encoder (`ModelFamily.encoder`:
        `audio_tower` / `encoder`).
      "all": every nnx.Param (full fine-tuning; LoRAParam is a Param, so adapters are included).

    Use it as `trainable, frozen = nnx.state(model, trainable_filter(mode), ...)` or with
    `nnx.split(model, trainable_filter(mode), ...)`; non-Param state (BatchNorm statistics) is
    never selected.
    """
    projectors = tuple(f.projector for f in families().values())
    encoders = tuple(f.encoder for f in families().values())
    if mode == "adapters":
        return LoRAParam
    if mode == "adapters+projector":
        return nnx.Any(LoRAParam, nnx.All(nnx.Param, _under(projectors)))
    if mode == "adapters+projector+encoder":
        return nnx.Any(LoRAParam, nnx.All(nnx.Param, _under(projectors + encoders)))
    if mode == "all":
        return nnx.Param
    raise ValueError(
        f"trainable={mode!r}; expected one of 'adapters', 'adapters+projector', "
        "'adapters+projector+encoder', 'all'"
    )
