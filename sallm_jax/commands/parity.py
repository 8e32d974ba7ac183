"""Check that sallm_jax computes what transformers computes for a checkpoint directory.

    python -m sallm_jax.commands.parity --checkpoint DIR [--tolerance 1e-4] [--dtype float32]
                               [--adapter ADAPTER_DIR] [--seed 0]

Prints the largest |logit difference| on random features and prompts (a PEFT adapter in DIR or
--adapter applied on both sides); exits 0 within the tolerance, 1 above, 2 when it cannot run. The
sides load one after the other (sallm_jax's peak: about the parameters' bytes, 34 GB for
Qwen2-Audio-7B in float32). bfloat16 differs by about 1e-2: pass a matching tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sallm_jax.models.families import family_for_type
from sallm_jax.models.hub.load import Checkpoint, load_checkpoint


@dataclasses.dataclass(frozen=True)
class ParityInputs:
    """A left-padded batch of two prompts with one clip each (the second shorter): `features` [2,
    frames, feature_size] float32, time-major; `lengths` [2] int32 valid frames; `input_ids`,
    `attention_mask` [2, seq] int32 (placeholders expanded); `audio_tokens` [2] int32 per row."""

    features: np.ndarray
    lengths: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    audio_tokens: np.ndarray


def parity_inputs(checkpoint: Checkpoint, *, seed: int = 0, text_tokens: int = 8) -> ParityInputs:
    """Random features and prompts shaped for `checkpoint`'s family."""
    rng = np.random.default_rng(seed)
    config = checkpoint.model.config
    family = checkpoint.family
    frames = family.reference_frames(config)
    lengths = np.array([frames, 2 * frames // 3], np.int32)
    audio_tokens = family.audio_tokens(config, lengths)
    features = rng.normal(size=(2, frames, checkpoint.processor.feature_size)).astype(np.float32)
    # The extractor pads a short clip with a constant floor, not noise.
    features[1, lengths[1] :] = -0.75
    vocab, audio_id = config.text.vocab_size, config.audio_token_id
    rows = []
    for n_audio, n_text in zip(audio_tokens, (text_tokens, text_tokens + 4), strict=True):
        text = rng.integers(0, vocab - 1, size=n_text)
        text = np.where(text >= audio_id, text + 1, text)  # any id but the placeholder
        half = n_text // 2
        rows.append(np.concatenate([text[:half], np.full(n_audio, audio_id), text[half:]]))
    seq = max(len(r) for r in rows)
    input_ids = np.zeros((2, seq), np.int32)
    attention_mask = np.zeros((2, seq), np.int32)
    for b, row in enumerate(rows):
        input_ids[b, seq - len(row) :] = row
        attention_mask[b, seq - len(row) :] = 1
    return ParityInputs(features, lengths, input_ids, attention_mask, audio_tokens.astype(np.int32))


# One jitted forward for the module: models of the same structure reuse its compilation.
@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, *args) -> jax.Array:
    # Split state under jax.jit: nnx.jit's graph traversal kept ~2x more host memory alive.
    return nnx.merge(graphdef, state)(*args)


def sallm_logits(checkpoint: Checkpoint, inputs: ParityInputs) -> np.ndarray:
    """sallm_jax logits [2, seq, vocab] float32."""
    args = (inputs.input_ids, inputs.attention_mask, inputs.features, inputs.lengths)
    graphdef, state = nnx.split(checkpoint.model)
    return np.asarray(_forward(graphdef, state, *map(jnp.asarray, args)))


def transformers_logits(
    path: str,
    model_type: str,
    inputs: ParityInputs,
    *,
    dtype: str,
    adapter_dir: str | None = None,
) -> np.ndarray:
    """transformers logits [2, seq, vocab] float32, positions passed as sallm_jax counts them."""
    import torch
    import transformers

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    family = family_for_type(model_type)
    model = getattr(transformers, family.architecture).from_pretrained(path, dtype=torch_dtype)
    if adapter_dir is not None:
        import peft

        model = peft.PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    positions = np.maximum(np.cumsum(inputs.attention_mask, axis=1) - 1, 0)
    kwargs = dict(
        input_ids=torch.from_numpy(inputs.input_ids).long(),
        attention_mask=torch.from_numpy(inputs.attention_mask).long(),
        position_ids=torch.from_numpy(positions).long(),
    )
    audio = family.reference_audio_inputs(inputs.features, inputs.lengths, inputs.audio_tokens)
    kwargs.update({name: torch.from_numpy(array) for name, array in audio.items()})
    kwargs["input_features"] = kwargs["input_features"].to(torch_dtype)
    with torch.no_grad():
        return model(**kwargs).logits.float().numpy()


def max_logit_difference(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    adapter_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[float, int]:
    """(largest |sallm_jax - transformers| logit difference, number of positions compared)."""
    path = os.fspath(path)
    adapter_dir = None if adapter_dir is None else os.fspath(adapter_dir)
    checkpoint = load_checkpoint(path, dtype=dtype, adapter_dir=adapter_dir)
    inputs = parity_inputs(checkpoint, seed=seed)
    ours = sallm_logits(checkpoint, inputs)
    model_type = checkpoint.family.model_type
    del checkpoint  # one model in memory at a time
    theirs = transformers_logits(path, model_type, inputs, dtype=dtype, adapter_dir=adapter_dir)
    valid = inputs.attention_mask.astype(bool)
    return float(np.abs(ours[valid] - theirs[valid]).max()), int(valid.sum())


def _missing_reference(checkpoint: str, adapter: str | None) -> str | None:
    """Why the transformers side cannot run, or None."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return (
            f"the parity check runs the checkpoint through transformers too, which needs torch "
            f"and transformers ({error}); install them, e.g. `pip install torch transformers`"
        )
    in_dir = os.path.exists(os.path.join(checkpoint, "adapter_config.json"))
    if adapter is not None or in_dir:
        try:
            import peft  # noqa: F401
        except ImportError:
            return "the checkpoint has a LoRA adapter; transformers needs `pip install peft` for it"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sallm_jax.commands.parity",
        description="Largest logit difference between sallm_jax and transformers.",
    )
    parser.add_argument("--checkpoint", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--adapter", default=None, help="PEFT LoRA adapter directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    problem = _missing_reference(args.checkpoint, args.adapter)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        diff, positions = max_logit_difference(
            args.checkpoint, dtype=args.dtype, adapter_dir=args.adapter, seed=args.seed
        )
    except (FileNotFoundError, NotImplementedError, ValueError) as error:
        print(f"error: cannot check {args.checkpoint}: {error}", file=sys.stderr)
        return 2
    ok = diff <= args.tolerance
    print(
        f"max |logit difference| = {diff:.3e} over {positions} positions "
        f"({args.dtype}, tolerance {args.tolerance:g}): {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
