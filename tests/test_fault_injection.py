"""Fault injection: a short two-stage run (SFT, then GRPO, then evaluation) SIGKILLed at random
moments and started again each time until it finishes ends with the same results.json,
predictions, best-parameter records and per-step metrics as the same run left alone.

The kill delays come from a seeded RNG, scaled to the start-up time of the uninterrupted run
(launch to the first training record), so kills land during start-up, training, validation,
checkpoint and parameter writes and evaluation alike on a fast or a loaded machine.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# chrF rewards and selection, so that the GRPO updates and the validation scores of a barely
# trained model are not all zero (under BLEU they would be) and new best parameters get saved.
COMMAND = [sys.executable, "-m", "sallm_jax.main", "--config=configs/sqa_grpo.py:smoke",
           "--config.stages=('sft','grpo','eval')", "--config.sft.start=init",
           "--config.rl.start=", "--config.rl.steps=6", "--config.rl.checkpoint_every=2",
           "--config.rl.eval_every=2", "--config.rl.reward_fns=('chrf',)",
           "--config.rl.select_on=chrf"]
STAGES = ("sft", "grpo")
TIMING = ("tokens_per_s", "step_seconds")  # wall-clock scalars: the only ones that may differ
MAX_KILLS = 4  # bounds the test's time; then the run is left to finish
SEED = 20261202


def launch(workdir, cache, log):
    env = {**os.environ, "SALLM_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([*COMMAND, f"--workdir={workdir}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for(condition, proc, timeout: float) -> bool:
    """Poll until `condition()` holds (True) or `proc` exits or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def trained_a_step(workdir) -> bool:
    path = workdir / STAGES[0] / "metrics.jsonl"
    return path.exists() and '"loss"' in path.read_text()


def resumable(workdir) -> bool:
    """A stage under way has a finished checkpoint, so the next start resumes it."""
    return any(not (workdir / s / "params").exists() and (workdir / s / "checkpoints").is_dir()
               and any(p.name.isdigit() for p in (workdir / s / "checkpoints").iterdir())
               for s in STAGES)


def outcome(workdir) -> dict:
    """What a finished run leaves that does not depend on the wall clock."""
    records = {}
    for stage in STAGES:
        lines = (workdir / stage / "metrics.jsonl").read_text().splitlines()
        records[stage] = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
                          for line in lines]
    predictions = {str(p.relative_to(workdir)): p.read_text()
                   for p in sorted((workdir / "eval").glob("*/*/predictions.jsonl"))}
    best = {stage: json.loads((workdir / stage / "best.json").read_text()) for stage in STAGES}
    return {"results": json.loads((workdir / "results.json").read_text()),
            "metrics": records, "predictions": predictions, "best": best}


def test_random_sigkills_and_restarts_give_the_uninterrupted_results(tmp_path, smoke_cache):
    reference, faulted = tmp_path / "reference", tmp_path / "faulted"
    with open(tmp_path / "reference.log", "w") as log:
        began = time.monotonic()
        proc = launch(reference, smoke_cache, log)
        assert wait_for(lambda: trained_a_step(reference), proc, 900), (
            (tmp_path / "reference.log").read_text()[-3000:])
        startup = time.monotonic() - began
        assert proc.wait(timeout=900) == 0, (tmp_path / "reference.log").read_text()[-3000:]
        total = time.monotonic() - began
    expected = outcome(reference)
    assert len(expected["metrics"]["grpo"]) > 6  # the steps and the validation scores
    print(f"uninterrupted run: start-up {startup:.1f} s, {total:.1f} s in all")

    rng = random.Random(SEED)
    kills, resumable_kills, logs = [], 0, []
    while True:
        logs.append(tmp_path / f"start{len(logs)}.log")
        with open(logs[-1], "w") as log:
            proc = launch(faulted, smoke_cache, log)
            if len(kills) == MAX_KILLS:
                assert proc.wait(timeout=900) == 0, logs[-1].read_text()[-3000:]
                break
            began, delay = time.monotonic(), startup * rng.uniform(0.5, 2.0)
            if not kills:
                # The first kill waits for a checkpoint of a stage under way, so that at least
                # one start resumes (random delays alone may land only between stages).
                wait_for(lambda: resumable(faulted), proc, 900)
                began, delay = time.monotonic(), startup * rng.uniform(0.0, 0.5)
            wait_for(lambda: False, proc, delay)
            if not kills:  # the stage may have finished meanwhile: wait for the next one's
                wait_for(lambda: resumable(faulted), proc, 900)
            if proc.poll() is not None:  # finished before its kill
                assert proc.returncode == 0, logs[-1].read_text()[-3000:]
                break
            resumable_kills += resumable(faulted)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(round(time.monotonic() - began, 1))
    print(f"killed after {kills} s; {resumable_kills} kills with a checkpoint to resume from")

    assert kills and resumable_kills, kills
    later = "".join(path.read_text() for path in logs[1:])
    assert "resumed from" in later
    assert "Traceback" not in later, later[-3000:]
    got = outcome(faulted)
    assert got["results"] == expected["results"]
    for stage in STAGES:
        assert got["metrics"][stage] == expected["metrics"][stage], stage
    assert got["predictions"] == expected["predictions"]
    assert got["best"] == expected["best"]
