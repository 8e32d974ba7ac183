"""The sqa `paper` preset at a published model's size on this machine: load, compile, step,
checkpoint, a kill and a resume, then export, with the peak resident memory of each process
against `plan_memory`'s prediction.

    python -m benchmarks.real_size --preset granite_speech_2b --dir /tmp/real_size
    python -m benchmarks.real_size --preset granite_speech_2b --layers 2 --encoder_layers 2

1. `sallm_jax.commands.random_checkpoint` writes the checkpoint (bfloat16, the preset's widths and
   vocabulary; `--layers` / `--encoder_layers` cut the depth), unless it is there already.
2. A small embedded spoken-QA set becomes the train / validation / test manifests.
3. `sallm_jax.main --config=configs/sqa_grpo.py:paper`, cut to 2 SFT and 2 GRPO steps of
   `--prompts` prompts x G = 2, 16 new tokens, LoRA rank 8, evaluation of 4 test rows, in
   bfloat16, runs until the first GRPO checkpoint is on disk and is killed (SIGKILL); a second
   process resumes it to the end.
4. A third process loads the checkpoint with the GRPO stage's parameters and exports them
   (`export_hf`, LoRA merged).

Each process runs with JAX_LOG_COMPILES, so its log names every compiled program and the
seconds it took. The peak resident memory of each process is its rusage (`os.wait4`); the
prediction is `step_memory.plan_memory` for the same model, batch and lengths on one device,
with the CPU backend's rows.
Prints one JSON record of the figures and a Markdown table of them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 1024**3
COMPILED = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.]+) sec")
# absl's log prefix (I, month and day, time of day), then a stage's step line.
BUCKET_S = 5.0  # the run's one audio bucket (the embedded clips are shorter)
STEP_LINE = re.compile(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*\[(sft|grpo)\] step (\d+) ")


def cut_down(checkpoint: pathlib.Path, manifests: dict[str, pathlib.Path],
             prompts: int) -> list[str]:
    """The paper preset's overrides for a run of a few steps (module docstring, step 3)."""
    settings = [
        f"model.checkpoint={checkpoint}", "model.dtype=bfloat16", "lora.rank=8",
        "sft.steps=2", f"sft.batch_size={prompts}", "sft.max_target_tokens=16",
        "sft.eval_every=0", "sft.checkpoint_every=1", "sft.log_every=1",
        "grpo.steps=2", f"grpo.batch_size={prompts}", "grpo.group_size=2",
        "grpo.max_completion_length=16", "grpo.eval_every=0", "grpo.checkpoint_every=1",
        "grpo.log_every=1", "eval.max_new_tokens=16", "eval.batch_size=4", "eval.num_samples=1",
        "eval.greedy=False", "eval.splits=('test',)", f"data.audio_buckets_s=({BUCKET_S},)",
        *(f"data.{split}_manifest={path}" for split, path in manifests.items())]
    return [f"--config.{s}" for s in settings]


def resident_bytes(pid: int) -> int:
    """VmRSS of a running process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return 0


def run_child(args: list[str], log: pathlib.Path, env: dict, max_rss: int,
              kill_when=None) -> dict:
    """Runs `python ARGS` with its output in `log`; sends SIGKILL once `kill_when` (a function
    of nothing) is true, or once the process holds more than `max_rss` bytes (then "over_memory"
    is set: the machine would otherwise start to swap or kill at random). Returns seconds, peak
    RSS bytes and the exit status."""
    start, over = time.perf_counter(), False
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                 env=env, cwd=ROOT)
        while not (done := os.wait4(child.pid, os.WNOHANG))[0]:
            over = over or resident_bytes(child.pid) > max_rss
            if over or (kill_when is not None and kill_when()):
                child.send_signal(signal.SIGKILL)
                done = os.wait4(child.pid, 0)
                break
            time.sleep(0.5)
        _, status, usage = done
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss": usage.ru_maxrss * 1024, "status": status, "over_memory": over}


def compiles(log: pathlib.Path) -> list[tuple[str, float]]:
    """(program, seconds) of every XLA compilation the log names."""
    return [(m[1], float(m[2])) for m in COMPILED.finditer(log.read_text())]


def step_times(log: pathlib.Path) -> dict[str, list[float]]:
    """Seconds between consecutive step lines of each stage (from the second step on: the
    first includes compilation)."""
    stamps: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        if m := STEP_LINE.match(line):
            seconds = 3600 * int(m[1]) + 60 * int(m[2]) + float(m[3])
            stamps.setdefault(m[4], []).append(seconds)
    return {stage: [round(b - a, 1) for a, b in zip(s, s[1:], strict=False)]
            for stage, s in stamps.items()}


def predicted_bytes(checkpoint: pathlib.Path, prompts: int) -> int:
    """plan_memory's total for this run's GRPO step on one device: prompts of the paper
    preset's text limit plus the audio tokens of the run's one bucket."""
    from sallm_jax.configs.sqa_grpo import get_config

    from sallm_jax.commands.step_memory import PlanInputs, plan_memory
    from sallm_jax.models.families import family_for_hf_config, num_audio_tokens

    hf = json.loads((checkpoint / "config.json").read_text())
    config = family_for_hf_config(hf).config_from_hf(hf)
    paper = get_config("paper")
    prompt_len = (paper.data.max_prompt_text_tokens
                  + num_audio_tokens(config, int(BUCKET_S * 16000)))
    plan = plan_memory(config, {"data": 1, "fsdp": 1, "tensor": 1},
                       PlanInputs(batch_size=prompts, group_size=2, prompt_len=prompt_len,
                                  completion_len=16, dtype="bfloat16", lora_rank=8,
                                  remat="full" if paper.model.remat else "none",
                                  beta=paper.grpo.beta, backend="cpu"))
    return plan.total


def make_manifests(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    from sallm_jax.data.embedded_sqa import EMBEDDED_SQA

    return {split: pathlib.Path(path) for split, path in EMBEDDED_SQA.build(
        directory, seed=0, num_train=8, num_validation=2, num_test=4).items()}


# The GRPO stage's trained adapters on the checkpoint, exported with LoRA merged.
EXPORT = """
import json, pathlib, sys, time
import ml_collections
from flax import nnx
from sallm_jax.run.experiment import build_model
from sallm_jax.models.hub.export import export_hf
from sallm_jax.models.lora import trainable_filter
from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.train.params_io import restore_params
workdir = pathlib.Path(sys.argv[1])
cfg = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
start = time.perf_counter()
model, chat = build_model(cfg, {}, workdir)
print("load seconds", round(time.perf_counter() - start, 1), flush=True)
params = nnx.state(model, trainable_filter(cfg.lora.trainable))  # no other state kept alive
partitioner = Partitioner(make_mesh({"data": -1}), ())
nnx.update(model, restore_params(workdir / "grpo" / "params", params, partitioner))
start = time.perf_counter()
export_hf(model, sys.argv[2], lora="merged", tokenizer=chat.tokenizer)
print("export seconds", round(time.perf_counter() - start, 1), flush=True)
"""


def measure(directory: pathlib.Path, preset: str, layers: int | None,
            encoder_layers: int | None, prompts: int, max_rss: int) -> dict:
    checkpoint = directory / "checkpoint"
    figures: dict = {"preset": preset, "layers": layers, "encoder_layers": encoder_layers}
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_LOG_COMPILES": "1",
           "SALLM_JAX_CACHE": str(directory / "cache")}
    if not (checkpoint / "model.safetensors").exists():
        from sallm_jax.commands.random_checkpoint import write_random_checkpoint

        figures["written"] = write_random_checkpoint(checkpoint, preset, layers=layers,
                                                     encoder_layers=encoder_layers)
    manifests = make_manifests(directory / "data")
    workdir = directory / "run"
    args = ["-m", "sallm_jax.main", "--config=configs/sqa_grpo.py:paper",
            f"--workdir={workdir}", *cut_down(checkpoint, manifests, prompts)]
    first_grpo_checkpoint = workdir / "grpo" / "checkpoints" / "1"
    figures["killed"] = run_child(args, directory / "first.log", env, max_rss,
                                  kill_when=first_grpo_checkpoint.exists)
    figures["resumed"] = run_child(args, directory / "resumed.log", env, max_rss)
    figures["export"] = run_child(["-c", EXPORT, str(workdir), str(directory / "exported")],
                                  directory / "export.log", env, max_rss)
    for name in ("first", "resumed", "export"):
        figures[f"compiles_{name}"] = compiles(directory / f"{name}.log")
        figures[f"steps_{name}"] = step_times(directory / f"{name}.log")
    checkpoints = workdir / "grpo" / "checkpoints"
    figures["checkpoint_bytes"] = sum(p.stat().st_size for p in checkpoints.rglob("*")
                                      if p.is_file())
    figures["results"] = json.loads((workdir / "results.json").read_text()) if (
        workdir / "results.json").exists() else None
    figures["predicted_bytes"] = predicted_bytes(checkpoint, prompts)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_size", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="granite_speech_2b")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--encoder_layers", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=1)
    parser.add_argument("--dir", default="")
    parser.add_argument("--max_rss_gib", type=float, default=21.0,
                        help="kill a process that holds more (this machine has 24 GiB)")
    args = parser.parse_args(argv)
    directory = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="real_size-"))
    directory.mkdir(parents=True, exist_ok=True)
    figures = measure(directory, args.preset, args.layers, args.encoder_layers, args.prompts,
                      int(args.max_rss_gib * GIB))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
