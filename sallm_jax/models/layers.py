"""Constructors of the `nnx.Linear` and `nnx.LayerNorm` layers that every model here builds."""

from __future__ import annotations

from flax import nnx

from sallm_jax.models.attention import normal_init


def linear(
    d_in: int,
    d_out: int,
    names: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    dtype,
    param_dtype,
    use_bias: bool = True,
) -> nnx.Linear:
    """nnx.Linear d_in -> d_out, kernel drawn by `normal_init(names)` (logical axis names)."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=normal_init(names),
        rngs=rngs,
    )


def layer_norm(dim: int, eps: float, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch-compatible LayerNorm [..., dim]: use_fast_variance=False computes E[(x - mean)^2]
    (two-pass, as torch does), not E[x^2] - mean^2."""
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        rngs=rngs,
    )
