"""Two processes on 127.0.0.1 with gloo collectives train like one process, and a collective
checkpoint restores: the two-process run matches the single-process losses and rewards, and
resumed from its step-2 checkpoint it reproduces steps 3-4."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# chrF rewards the character n-grams that a barely trained model's samples share with the
# answers, so every step has advantages to learn from. (Under sentence BLEU these samples all
# score 0: the gradient is then float rounding alone, which Adam scales up to full-size steps
# that differ between one and two processes.)
ARGS = ["--config=configs/sqa_grpo.py:smoke", "--config.stages=('sft','grpo')",
        "--config.sft.start=", "--config.grpo.start=", "--config.sft.eval_every=0",
        "--config.sft.steps=2", "--config.sft.log_every=1", "--config.grpo.steps=4",
        "--config.grpo.checkpoint_every=2", "--config.grpo.log_every=1",
        "--config.grpo.reward_fns=('chrf',)", "--config.grpo.eval_every=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, cache, processes: int, args=ARGS) -> None:
    """`processes` processes of the main command with `args` on 127.0.0.1; each must exit 0."""
    env = {**os.environ, "SALLM_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    port, procs = free_port(), []
    for i in range(processes):
        extra = [] if processes == 1 else [
            f"--config.parallel.coordinator_address=127.0.0.1:{port}",
            f"--config.parallel.num_processes={processes}", f"--config.parallel.process_id={i}",
            "--config.parallel.cpu_collectives=True"]
        log = open(workdir.parent / f"{workdir.name}.{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "sallm_jax.main", *args, *extra,
                                       f"--workdir={workdir}"], env=env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=900) for p in procs]
    logs = [(workdir.parent / f"{workdir.name}.{i}.log").read_text()[-3000:]
            for i in range(processes)]
    assert codes == [0] * processes, logs


def metrics(workdir, stage):
    """Training records (validation scores are records of their own)."""
    records = [json.loads(line) for line in (workdir / stage / "metrics.jsonl").open()]
    return [r for r in records if "loss" in r]


def test_two_processes_match_one_and_resume(tmp_path, smoke_cache):
    cache = smoke_cache
    one, two = tmp_path / "one", tmp_path / "two"
    launch(one, cache, 1)
    launch(two, cache, 2)
    for stage, keys in (("sft", ("loss",)), ("grpo", ("loss", "reward_mean", "kl"))):
        a, b = metrics(one, stage), metrics(two, stage)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b, strict=True):
            for k in keys:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (stage, ra["step"], k)

    # Resume the two-process run from its step-2 checkpoint: steps 3 and 4 come out the same.
    before = metrics(two, "grpo")
    shutil.rmtree(two / "grpo" / "params")
    shutil.rmtree(two / "grpo" / "checkpoints" / "4")
    (two / "grpo" / "metrics.jsonl").unlink()
    launch(two, cache, 2)
    after = metrics(two, "grpo")
    assert [r["step"] for r in after] == [3, 4]
    for ra, rb in zip(before[2:], after, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-6)
        assert rb["reward_mean"] == pytest.approx(ra["reward_mean"], rel=1e-4, abs=1e-6)
