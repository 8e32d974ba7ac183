"""The main command end to end on the smoke preset: killed while the base model trains and again
during GRPO, started again each time, it resumes from the last checkpoint and finishes with
results for every stage under both evaluation protocols."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

COMMAND = [sys.executable, "-m", "sallm_jax.main", "--config=configs/sqa_grpo.py:smoke",
           "--config.grpo.steps=6"]


def start(workdir, cache, log):
    env = {**os.environ, "SALLM_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([*COMMAND, f"--workdir={workdir}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__))))


def run_until(root, pattern, workdir, cache, log_path):
    """Start the main job and SIGKILL it as soon as a path matching `pattern` under `root`
    exists."""
    with open(log_path, "w") as log:
        proc = start(workdir, cache, log)
        deadline = time.time() + 600
        while not list(root.glob(pattern)) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(root.glob(pattern)), log_path.read_text()[-3000:]


def test_killed_run_resumes_and_reports(tmp_path):
    # A cache of its own: the base model must not be built yet.
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    # Killed while the base model trains, then during GRPO: each start resumes where it was.
    run_until(cache, "base/*/train/checkpoints/2", workdir, cache, tmp_path / "first.log")
    assert not list((cache / "base").glob("*/base.json"))
    run_until(workdir, "grpo/checkpoints/2", workdir, cache, tmp_path / "second.log")
    assert "[base] resumed from step 2" in (tmp_path / "second.log").read_text()
    assert not (workdir / "results.json").exists()

    with open(tmp_path / "third.log", "w") as log:
        assert start(workdir, cache, log).wait(timeout=900) == 0, (
            (tmp_path / "third.log").read_text()[-3000:])
    third = (tmp_path / "third.log").read_text()
    assert "[base] loading the cached base model" in third
    assert "[warmup] already finished" in third and "[sft] already finished" in third
    assert "[grpo] resumed from update" in third
    assert "[grpo] step 1 " not in third  # earlier GRPO steps are not run again
    assert "[grpo] step 6 " in third
    results = json.loads((workdir / "results.json").read_text())
    assert set(results) == {"base", "warmup", "sft", "grpo"}
    for stage in results.values():
        assert set(stage) == {"test", "test_greedy"}
        assert set(stage["test"]) >= {"bleu", "bleu_std", "chrf", "rouge_l", "wer"}
        assert stage["test"]["num_examples"] == 8 and stage["test"]["num_samples"] == 2
        assert stage["test_greedy"]["num_samples"] == 1 and "bleu_std" not in stage["test_greedy"]
    predictions = (workdir / "eval" / "grpo" / "test" / "predictions.jsonl").read_text()
    assert len(predictions.splitlines()) == 8
    assert all(len(json.loads(line)["draws"]) == 2 for line in predictions.splitlines())
    base = json.loads(next((cache / "base").glob("*/base.json")).read_text())
    assert 0 <= base["heldout_asr"]["wer"] and base["heldout_asr"]["num_examples"] == 4
    metrics = [json.loads(line) for line in (workdir / "grpo" / "metrics.jsonl").open()]
    metrics = [m for m in metrics if "loss" in m]  # validation scores are records of their own
    assert {"reward_mean", "kl", "loss", "completion_length", "tokens_per_s"} <= set(metrics[-1])
    assert any(p.name.startswith("events") for p in (workdir / "grpo" / "tensorboard").iterdir())


def test_diverging_run_stops_with_a_reason_and_writes_no_results(tmp_path, smoke_cache):
    """grpo.learning_rate=1e30 drives the loss to NaN within a few GRPO steps: the run exits with
    the diverged code, names the step, and writes no results.json."""
    env = {**os.environ, "SALLM_JAX_CACHE": str(smoke_cache), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([*COMMAND, f"--workdir={tmp_path / 'run'}",
                          "--config.stages=('grpo',)", "--config.grpo.start=init",
                          "--config.grpo.learning_rate=1e30"],
                         env=env, capture_output=True, text=True, timeout=900,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 3, out.stderr[-3000:]
    assert "[grpo] step" in out.stderr and "non-finite loss or gradients" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_sigterm_saves_the_step_and_the_same_command_resumes(tmp_path, smoke_cache):
    """SIGTERM during GRPO (periodic checkpoints off): the run saves the step under way, exits
    with the preempted code, and the same command resumes there and finishes the stage."""
    workdir = tmp_path / "run"
    env = {**os.environ, "SALLM_JAX_CACHE": str(smoke_cache), "JAX_PLATFORMS": "cpu"}
    command = [*COMMAND, f"--workdir={workdir}", "--config.stages=('grpo',)",
               "--config.grpo.start=init", "--config.grpo.checkpoint_every=100"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        metrics = workdir / "grpo" / "metrics.jsonl"
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and not (
                metrics.exists() and '"step": 2,' in metrics.read_text()):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 5, (tmp_path / "first.log").read_text()[-3000:]
    first = (tmp_path / "first.log").read_text()
    saved = sorted(int(p.name) for p in (workdir / "grpo" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved and f"[grpo] stopped by SIGTERM after step {saved[-1]}" in first
    assert not (workdir / "grpo" / "params").exists()
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"[grpo] resumed from update {saved[-1]}" in out.stderr
    assert "[grpo] step 6 " in out.stderr and (workdir / "grpo" / "params").exists()
