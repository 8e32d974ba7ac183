"""Low-rank adapters (LoRA) on the `nnx.Linear` layers of any model here, matched by attribute name.

PEFT's W' = W + (alpha / r) B A in Flax layout: y = x W + (alpha / r) (x lora_a) lora_b, lora_a [in,
r] = lora_A.T, lora_b [r, out] = lora_B.T. `LoRAParam`s are split off by `trainable_filter`.
`set_lora_enabled(model, False)` (a static flag) on a merged copy gives the GRPO reference policy
without adapter matmuls (`rl.policy.merge_policy`).
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
    """An `nnx.Linear` (`base`, frozen) plus a rank-`rank` update scaled by alpha / rank: float32
    `LoRAParam`s lora_a [in, rank] (PEFT's kaiming-uniform init) and lora_b [rank, out] (zeros);
    `enabled` is static. ValueError when rank <= 0."""

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
        """The base kernel [in, out], so that weight maps written for `nnx.Linear` resolve."""
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
    """Replaces the nnx.Linear at `path` by a LoRALinear around it, in place, and returns it (a
    LoRALinear there gets fresh adapters; anything else: TypeError)."""
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
    """Wraps every nnx.Linear named in `target_modules` (PEFT's list semantics) with a LoRALinear.

    Changes `model` in place and returns it; the update is scaled by `alpha` / `rank`; `rngs` draws
    lora_a. Only attributes under `scope` match (the default keeps adapters off the audio encoder's
    q_proj / v_proj; None: the whole model). ValueError when nothing matches, a target is `lm_head`
    (its kernel is read directly), or the layers are stored stacked (apply before
    `set_scan_layers`).
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
    """Switches every adapter of `model` on or off (a static flag, see the module docstring)."""
    for _, module in lora_modules(model):
        module.enabled = bool(enabled)



def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds each enabled adapter into its kernel (W + (alpha / r) B A in float32, cast back) and
    unwraps it, in place; disabled ones are dropped. Returns `model`."""
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
    """nnx filter of the parameters a training run updates, for the `lora.trainable` config key.

    "adapters": LoRAParam only; "adapters+projector": also each family's `ModelFamily.projector`;
    "adapters+projector+encoder": also `ModelFamily.encoder`; "all": every nnx.Param. BatchNorm
    statistics are never selected; another mode is a ValueError.
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
