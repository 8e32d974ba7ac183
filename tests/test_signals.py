"""A stop signal in every phase of the main job, each sent by this test to the running process
once its log shows the phase under way: data synthesis, tokenizer training, the base model's
training and held-out pass, validation and evaluation. Each start exits promptly with the
preempted code (5) and leaves nothing half written; a second SIGINT stops at once (130); the
next start resumes, and the evaluation reruns only the passes that were not written.

SALLM_JAX_PAUSE_AT holds the phase at its first item until the signal arrives
(`sallm_jax.runtime.stop_signal`), so the signal lands inside the phase on any machine.
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
COMMAND = [sys.executable, "-m", "sallm_jax.main", "--config=configs/sqa_grpo.py:smoke",
           "--config.stages=('base','warmup','eval')", "--config.warmup.eval_every=2",
           "--config.eval.splits=('test',)", "--config.eval.greedy=False"]
PROMPT_S = 60  # from the signal to the exit; a held phase would otherwise wait 120 s


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """A start whose test failed is killed, not left running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Start:
    """One start of the main job on `workdir` and `cache`, its output in `<name>.log`."""

    def __init__(self, tmp_path, name: str, pause: str | None = None):
        env = {**os.environ, "SALLM_JAX_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
        env.pop("SALLM_JAX_PAUSE_AT", None)
        if pause:
            env["SALLM_JAX_PAUSE_AT"] = pause
        self.log = tmp_path / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([*COMMAND, f"--workdir={tmp_path / 'run'}"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        STARTED.append(self.proc)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, line: str, timeout: float = 900) -> None:
        """Until the log holds `line` (the run's own progress); fails if the run ends first."""
        deadline = time.monotonic() + timeout
        while line not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                f"{line!r} never came:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals) -> int:
        """Send `sig`; the exit status, which must come within PROMPT_S."""
        sent = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=PROMPT_S)
        assert time.monotonic() - sent < PROMPT_S
        return code

    def finish(self) -> int:
        return self.proc.wait(timeout=900)


def nothing_half_written(cache, workdir) -> None:
    temporary = [*cache.glob("*/.*building*"), *cache.glob("base/*/tokenizer.saving-*")]
    for root in (cache, workdir):
        temporary += [*root.glob("**/*.orbax-checkpoint-tmp*"), *root.glob("**/.*.tmp-*")]
    assert not temporary, temporary


def test_a_signal_in_every_phase_stops_it_and_the_next_start_resumes(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "run"

    run = Start(tmp_path, "synth", pause="synth sqa")
    run.wait_for("[synth sqa] paused")
    assert run.stop(signal.SIGTERM) == 5, run.text()[-3000:]
    assert "[synth sqa] stopped by SIGTERM" in run.text() and "Traceback" not in run.text()
    assert not list(cache.glob("embedded_sqa/*/build.json"))
    nothing_half_written(cache, workdir)

    run = Start(tmp_path, "tokenizer", pause="tokenizer")
    run.wait_for("[tokenizer] paused")
    assert run.stop(signal.SIGINT) == 5, run.text()[-3000:]
    assert "[tokenizer] stopped by SIGINT" in run.text() and "Traceback" not in run.text()
    assert list(cache.glob("embedded_sqa/*/build.json")) and list(
        cache.glob("embedded_asr/*/build.json"))  # the synthesis finished this time
    assert not list(cache.glob("base/*/tokenizer*"))
    nothing_half_written(cache, workdir)

    # A step that outlasts the first Ctrl-C: the second stops the run at once.
    run = Start(tmp_path, "base", pause="base:hold")
    run.wait_for("[base] paused")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("SIGINT received")
    assert run.stop(signal.SIGINT) == 130, run.text()[-3000:]
    assert "stopped at once by a second SIGINT" in run.text() and "Traceback" not in run.text()
    assert list(cache.glob("base/*/tokenizer/tokenizer.json"))
    nothing_half_written(cache, workdir)

    run = Start(tmp_path, "heldout", pause="base heldout")
    run.wait_for("[base heldout] paused")
    assert run.stop(signal.SIGTERM) == 5, run.text()[-3000:]
    assert "[base heldout] stopped by SIGTERM" in run.text()
    assert list(cache.glob("base/*/train/checkpoints/4"))
    assert not list(cache.glob("base/*/base.json")) and not list(cache.glob("base/*/heldout/*"))
    nothing_half_written(cache, workdir)

    run = Start(tmp_path, "validation", pause="validation")
    run.wait_for("[validation] paused")
    assert run.stop(signal.SIGTERM) == 5, run.text()[-3000:]
    assert "[base] resumed from step 4" in run.text()
    assert "[validation] stopped by SIGTERM" in run.text()
    assert list(cache.glob("base/*/base.json")) and not (workdir / "warmup" / "params").exists()
    nothing_half_written(cache, workdir)

    run = Start(tmp_path, "eval", pause="eval warmup")
    run.wait_for("[eval warmup/test] paused")
    assert run.stop(signal.SIGTERM) == 5, run.text()[-3000:]
    assert "[eval warmup/test] stopped by SIGTERM" in run.text()
    written = json.loads((workdir / "eval" / "base" / "test" / "metrics.json").read_text())
    assert not (workdir / "eval" / "warmup" / "test").exists()
    assert not (workdir / "results.json").exists()
    nothing_half_written(cache, workdir)

    run = Start(tmp_path, "last")
    assert run.finish() == 0, run.text()[-3000:]
    last = run.text()
    assert "[eval base/test] already written" in last
    assert "[eval warmup/test] already written" not in last  # the pass the signal stopped
    results = json.loads((workdir / "results.json").read_text())
    assert set(results) == {"base", "warmup"} and set(results["warmup"]) == {"test"}
    assert results["base"]["test"] == written
    assert results["warmup"]["test"]["num_examples"] == 8
    nothing_half_written(cache, workdir)
