"""Fault injection: a short two-stage run (SFT, then GRPO, then evaluation) SIGKILLed at chosen
points of its own progress and started again each time until it finishes ends with the same
results.json, predictions, best-parameter records and per-step metrics as the same run left
alone.

The kills follow the run, not the clock: SALLM_JAX_PAUSE_AT holds the run where a kill is due
(`sallm_jax.runtime.stop_signal`) and logs it, and the kill is sent on that line, so on any machine
they land (1) inside SFT after step 3, between its checkpoints, (2) inside the write of GRPO's
checkpoint 4, its files in Orbax's temporary folder, (3) inside GRPO after step 5, after its
validation at 4, and (4) inside the evaluation of the GRPO policy, the other passes written.
What the killed process left on disk shows where each landed, and the test asserts it.
"""

import json
import os
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
           "--config.grpo.start=", "--config.grpo.steps=6", "--config.grpo.checkpoint_every=2",
           "--config.grpo.eval_every=2", "--config.grpo.reward_fns=('chrf',)",
           "--config.grpo.select_on=chrf"]
STAGES = ("sft", "grpo")
TIMING = ("tokens_per_s", "step_seconds")  # wall-clock scalars: the only ones that may differ


def launch(workdir, cache, log, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "SALLM_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    env.pop("SALLM_JAX_PAUSE_AT", None)
    if pause:
        env["SALLM_JAX_PAUSE_AT"] = pause
    return subprocess.Popen([*COMMAND, f"--workdir={workdir}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def killed_at(workdir, cache, log_path, pause: str, line: str, saved=None) -> None:
    """Start the run held at `pause`; SIGKILL it once its log shows `line` (the pause that holds
    it there) and, when given, the checkpoint folder `saved` is finalised."""
    with open(log_path, "w") as log:
        proc = launch(workdir, cache, log, pause)
        try:
            deadline = time.monotonic() + 900
            while line not in log_path.read_text() or (saved and not saved.exists()):
                assert proc.poll() is None and time.monotonic() < deadline, (
                    f"{line!r} never came:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def steps(directory) -> list[int]:
    """The finalised checkpoints of a stage (Orbax also keeps its first step's)."""
    return sorted(int(p.name) for p in (directory / "checkpoints").iterdir() if p.name.isdigit())


def writing(directory) -> list[str]:
    """Its checkpoint folders that Orbax has not finalised."""
    return [p.name for p in (directory / "checkpoints").iterdir() if not p.name.isdigit()]


def records(workdir, stage) -> list[dict]:
    return [json.loads(line) for line in (workdir / stage / "metrics.jsonl").open()]


def outcome(workdir) -> dict:
    """What a finished run leaves that does not depend on the wall clock."""
    metrics = {stage: [{k: v for k, v in r.items() if k not in TIMING}
                       for r in records(workdir, stage)] for stage in STAGES}
    predictions = {str(p.relative_to(workdir)): p.read_text()
                   for p in sorted((workdir / "eval").glob("*/*/predictions.jsonl"))}
    best = {stage: json.loads((workdir / stage / "best.json").read_text()) for stage in STAGES}
    return {"results": json.loads((workdir / "results.json").read_text()),
            "metrics": metrics, "predictions": predictions, "best": best}


def test_kills_at_chosen_points_and_restarts_give_the_uninterrupted_results(tmp_path,
                                                                            smoke_cache):
    reference, faulted = tmp_path / "reference", tmp_path / "faulted"
    with open(tmp_path / "reference.log", "w") as log:
        assert launch(reference, smoke_cache, log).wait(timeout=900) == 0, (
            (tmp_path / "reference.log").read_text()[-3000:])
    expected = outcome(reference)
    assert len(expected["metrics"]["grpo"]) > 6  # the steps and the validation scores

    # (1) Inside SFT after step 3: checkpoint 2 finalised, 4 not begun, the stage unfinished.
    killed_at(faulted, smoke_cache, tmp_path / "start0.log", "sft@3:hold",
              "[sft] paused after step 3", saved=faulted / "sft" / "checkpoints" / "2")
    assert max(steps(faulted / "sft")) == 2 and not writing(faulted / "sft")
    assert not (faulted / "sft" / "params").exists()

    # (2) Inside the write of GRPO's checkpoint 4: its files in Orbax's temporary folder.
    killed_at(faulted, smoke_cache, tmp_path / "start1.log", "checkpoint grpo/4",
              "[checkpoint grpo/4] paused inside the write")
    assert "[sft] resumed from step 2" in (tmp_path / "start1.log").read_text()
    assert max(steps(faulted / "grpo")) == 2
    assert [name.split(".")[0] for name in writing(faulted / "grpo")] == ["4"]

    # (3) Inside GRPO after step 5: it resumed from 2, wrote checkpoint 4 again, scored step 4.
    killed_at(faulted, smoke_cache, tmp_path / "start2.log", "grpo@5:hold",
              "[grpo] paused after step 5", saved=faulted / "grpo" / "checkpoints" / "4")
    assert "[grpo] resumed from update 2" in (tmp_path / "start2.log").read_text()
    assert max(steps(faulted / "grpo")) == 4 and 2 in steps(faulted / "grpo")
    assert not writing(faulted / "grpo")  # the temporary folder the kill left is gone
    assert max(r["step"] for r in records(faulted, "grpo")) == 5
    assert not (faulted / "grpo" / "params").exists()

    # (4) Inside the evaluation of the GRPO policy: the SFT policy's passes written, not its.
    killed_at(faulted, smoke_cache, tmp_path / "start3.log", "eval grpo",
              "[eval grpo/test] paused")
    assert "[grpo] resumed from update 4" in (tmp_path / "start3.log").read_text()
    assert all((faulted / "eval" / "sft" / key / "done.json").exists()
               for key in ("test", "test_greedy"))
    assert not (faulted / "eval" / "grpo").exists() and not (faulted / "results.json").exists()

    with open(tmp_path / "last.log", "w") as log:
        assert launch(faulted, smoke_cache, log).wait(timeout=900) == 0, (
            (tmp_path / "last.log").read_text()[-3000:])
    last = (tmp_path / "last.log").read_text()
    assert "[grpo] already finished" in last and "[eval sft/test] already written" in last
    assert "[eval grpo/test] already written" not in last
    logs = "".join((tmp_path / f"start{i}.log").read_text() for i in range(1, 4)) + last
    assert "Traceback" not in logs, logs[-3000:]
    got = outcome(faulted)
    assert got["results"] == expected["results"]
    for stage in STAGES:
        assert got["metrics"][stage] == expected["metrics"][stage], stage
    assert got["predictions"] == expected["predictions"]
    assert got["best"] == expected["best"]
