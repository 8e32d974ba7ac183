"""The memory planner's command line: the per-device memory of a GRPO run (`step_memory`) as a
table, with a verdict against the device's memory.

    python -m sallm_jax.commands.plan_memory --preset qwen2_audio_7b --mesh data=1,fsdp=8,tensor=1 \
        --group_size 8 --batch_size 16 --prompt_len 512 --completion_len 256 --device v5e

Presets: the published checkpoints (`models.presets`) and `tiny`, the configs' default model.
What each row counts: `step_memory`.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Sequence

from sallm_jax.commands.step_memory import MemoryPlan, PlanInputs, plan_memory
from sallm_jax.configs.base import base_config
from sallm_jax.models.presets import PRESETS as MODEL_PRESETS
from sallm_jax.models.presets import ModelConfig
from sallm_jax.parallel.mesh import AXES, mesh_shape
from sallm_jax.parallel.sharding import DEFAULT_RULES, Rules
from sallm_jax.run.config_file import resolve_config_file
from sallm_jax.run.new_model import new_model_config

GIB = 1024**3

# Device memory by name (GiB of HBM per chip / GPU; "cpu": this machine's memory, where the
# plan adds the CPU backend's rows).
HOST_MEMORY_GIB = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)
DEVICE_MEMORY_GIB = {"v5e": 16.0, "v4": 32.0, "a100": 80.0, "h100": 80.0, "h200": 141.0,
                     "cpu": HOST_MEMORY_GIB}


def tiny():
    """The configs' default new model (configs/base.py's `tiny_model`, tokenizer.vocab_size)."""
    c = base_config()
    return new_model_config(c, c.tokenizer.vocab_size, audio_token_id=5)


PRESETS: dict[str, ModelConfig] = {**MODEL_PRESETS, "tiny": tiny()}


def parse_mesh(text: str) -> dict[str, int]:
    """"data=1,fsdp=8,tensor=1" -> {"data": 1, "fsdp": 8, "tensor": 1}; missing axes are 1."""
    sizes: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--mesh: expected AXIS=SIZE items like data=1,fsdp=8, got {item!r}")
        sizes[name.strip()] = int(value)
    if any(v == -1 for v in sizes.values()):
        raise ValueError(f"--mesh: give every axis an explicit size (no -1), got {text!r}")
    # mesh_shape checks the axis names and sizes the way the training run will.
    shape = mesh_shape(sizes, math.prod(sizes.values()) if sizes else 1)
    return dict(zip(AXES, shape, strict=True))


def load_rules(spec: str) -> Rules:
    """`parallel.rules` of a config file "path.py[:preset]" (found as sallm_jax.main finds it)."""
    path, _, preset = resolve_config_file(spec).partition(":")
    module_spec = importlib.util.spec_from_file_location("_plan_memory_config", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"--config: cannot load {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cfg = module.get_config(preset) if preset else module.get_config()
    return tuple(map(tuple, cfg.parallel.rules))


def _gib(n: int) -> str:
    return f"{n / GIB:9.2f} GiB"


def format_plan(plan: MemoryPlan, device_memory_gib: float, device: str = "") -> str:
    """The table, the total and a verdict against `device_memory_gib`."""
    width = max(map(len, plan.rows)) + 2
    lines = [f"{'':<{width}}{'per device':>13}", "-" * (width + 13)]
    lines += [f"{name:<{width}}{_gib(n):>13}" for name, n in plan.rows.items()]
    lines += ["-" * (width + 13), f"{'total':<{width}}{_gib(plan.total):>13}"]
    lines += [f"({plan.num_params / 1e9:.3f} B parameters, {plan.num_trainable / 1e9:.3f} B "
              f"trainable; {'; '.join(plan.notes)})"]
    limit = device_memory_gib * GIB
    name = f"{device} " if device else ""
    share = plan.total / limit
    if share <= 1:
        verdict = (f"FITS: {plan.total / GIB:.1f} of {device_memory_gib:g} GiB ({name}device "
                   f"memory, {share:.0%}); leave room for XLA scratch space")
    else:
        verdict = (f"DOES NOT FIT: {plan.total / GIB:.1f} GiB needed, {device_memory_gib:g} GiB "
                   f"per {name}device ({share:.1f}x); shard wider, use LoRA, --remat full, or "
                   f"a smaller batch")
    return "\n".join([*lines, verdict])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sallm_jax.commands.plan_memory",
        description="Per-device memory of GRPO training, from shapes alone.")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--mesh", default="data=1,fsdp=1,tensor=1",
                        help="axis sizes, e.g. data=1,fsdp=8,tensor=1")
    parser.add_argument("--config", default="",
                        help="take parallel.rules from this config (file.py[:preset]); "
                             "default: the built-in rules, which configs/*.py use")
    defaults = PlanInputs()
    parser.add_argument("--group_size", type=int, default=defaults.group_size)
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size,
                        help="prompts per step")
    parser.add_argument("--prompt_len", type=int, default=defaults.prompt_len,
                        help="prompt tokens, audio placeholders included")
    parser.add_argument("--completion_len", type=int, default=defaults.completion_len)
    parser.add_argument("--dtype", default=defaults.dtype,
                        choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--lora_rank", type=int, default=defaults.lora_rank,
                        help="0: full fine-tuning; r > 0: train rank-r adapters on q/v only")
    parser.add_argument("--remat", default=defaults.remat, choices=("none", "full"))
    parser.add_argument("--micro_batch_size", type=int, default=defaults.micro_batch_size,
                        help="prompts per gradient-accumulation micro-batch (0: all)")
    parser.add_argument("--beta", type=float, default=defaults.beta,
                        help="KL weight; 0 means no reference policy")
    parser.add_argument("--device", default="h100", choices=sorted(DEVICE_MEMORY_GIB))
    parser.add_argument("--device_memory_gib", type=float, default=None,
                        help="overrides the memory that --device implies")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    """Parse `argv`, print the plan and return the printed text."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        axis_sizes = parse_mesh(args.mesh)
    except ValueError as e:
        parser.error(str(e))
    rules = load_rules(args.config) if args.config else DEFAULT_RULES
    inputs = PlanInputs(batch_size=args.batch_size, group_size=args.group_size,
                        prompt_len=args.prompt_len, completion_len=args.completion_len,
                        dtype=args.dtype, lora_rank=args.lora_rank, remat=args.remat,
                        micro_batch_size=args.micro_batch_size,
                        beta=args.beta,
                        backend="cpu" if args.device == "cpu" else "accelerator")
    plan = plan_memory(PRESETS[args.preset], axis_sizes, inputs, rules)
    memory = args.device_memory_gib or DEVICE_MEMORY_GIB[args.device]
    header = (f"{args.preset} on {args.mesh} ({math.prod(axis_sizes.values())} devices): "
              f"B={inputs.batch_size} G={inputs.group_size} prompt={inputs.prompt_len} "
              f"completion={inputs.completion_len} {inputs.dtype} lora_rank={inputs.lora_rank} "
              f"remat={inputs.remat} beta={inputs.beta:g}")
    # A given --device_memory_gib names no device model.
    text = header + "\n" + format_plan(plan, memory, "" if args.device_memory_gib else args.device)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
