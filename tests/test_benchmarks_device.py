"""benchmarks/device.sh on CPU: phases under budgets, the table it always writes, the rows of
a smoke run, and the analytic counts its ceilings rest on."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

import jax
import pytest
from flax import nnx

from benchmarks import device_run
from benchmarks.device import decoder_matmul_params, progress, smoke_config
from benchmarks.timing import Row, Stat
from sallm_jax.models.abstract import abstract_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[\d\d:\d\d:\d\d UTC \+\d+ s[\] ]")


def device_sh(out: pathlib.Path, *args: str, timeout: float) -> tuple[str, float]:
    """(stdout, wall seconds) of `bash benchmarks/device.sh --out out *args` on CPU."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.monotonic()
    done = subprocess.run(["bash", "benchmarks/device.sh", "--out", str(out), *args], cwd=ROOT,
                          env=env, check=True, timeout=timeout, capture_output=True, text=True)
    return done.stdout, time.monotonic() - start


def tables(text: str) -> tuple[dict[str, list[str]], list[list[str]]]:
    """(the phases table: phase -> its cells, the measurement rows' cells) of DEVICE.md."""
    phases, rows, section = {}, [], ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        elif line.startswith("| ") and not line.startswith(("| phase |", "|---")):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if section == "## Phases":
                phases[cells[0]] = cells
            elif section == "## Measurements":
                rows.append(cells)
    return phases, rows


def test_phases_over_budget_are_stopped_and_the_table_says_so(tmp_path):
    """Tiny budgets: every phase runs out (or, for trl where TRL is missing, fails), and the
    run still ends with the table, each phase's row saying what happened and where."""
    out = tmp_path / "DEVICE.md"
    budgets = {"smoke": 12.0, "granite": 5.0, "trl": 6.0}
    grace = 2.0
    stdout, wall = device_sh(out, "--smoke", "--grace_s", str(grace),
                             *(a for name, s in budgets.items() for a in (f"--{name}_s", str(s))),
                             timeout=120)
    # Each phase stopped at its budget (plus the stack dump's second and the grace period),
    # and the run moved on: it took no longer than the budgets allow.
    stop = 1.0 + grace + 5.0
    assert wall < sum(budgets.values()) + len(budgets) * stop + 15
    text = out.read_text()
    header = text.split("## Phases")[0]
    for key in ("- date: ", "- commit: ", "- command: `bash benchmarks/device.sh --out ",
                "- device: ", "- budgets: smoke 12 s, granite 5 s, trl 6 s"):
        assert key in header
    assert "ended after" in header
    phases, _ = tables(text)
    assert list(phases) == ["smoke", "granite", "trl"]
    for name in ("smoke", "granite"):
        cells = phases[name]
        assert cells[2] == f"{budgets[name]:g}"
        ran = float(cells[4])
        assert budgets[name] <= ran <= budgets[name] + stop
        match = re.fullmatch(r"budget spent after (\d+) s at (.+)", cells[5])
        assert match, cells[5]
        assert int(match.group(1)) == round(ran)
    assert re.match(r"(budget spent after \d+ s at |failed after \d+ s \(exit |finished in )",
                    phases["trl"][5])
    # Every line of the run is time-stamped; the run's own phase lines name their budgets.
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert lines and all(STAMP.match(line) for line in lines)
    for name, seconds in budgets.items():
        assert any(f"phase {name} (budget {seconds:g} s): start" in line for line in lines)
    assert any("phase granite (budget 5 s): budget spent after" in line for line in lines)
    assert stdout.rstrip().endswith(text.rstrip().splitlines()[-1])  # the table, printed


@pytest.mark.slow
def test_device_script_smoke_writes_every_row(tmp_path):
    """The granite phase at toy sizes, to the end: its rows in order, each program's compile
    row, and the whole step reusing the compiled programs."""
    out = tmp_path / "DEVICE.md"
    device_sh(out, "--smoke", "--phases", "granite", "--granite_s", "500", timeout=600)
    phases, rows = tables(out.read_text())
    assert phases["granite"][5].startswith("finished in ")
    assert phases["smoke"][5] == phases["trl"][5] == "not run (not in --phases)"
    cases = [r[1] for r in rows]
    assert [c.split(",")[0] for c in cases] == [
        "build: model", "compile: rollout", "rollout", "compile: reference log-probs",
        "compile: update", "update", "GRPO step", "fused vs einsum attention",
        "log-prob forward pass"]
    measured = {c.split(",")[0]: float(r[3].split()[0]) for c, r in zip(cases, rows, strict=True)}
    assert all(measured[c] > 0 for c in measured if c != "fused vs einsum attention")
    # On CPU the fused path is JAX's XLA attention: equal to the einsum path to rounding.
    assert measured["fused vs einsum attention"] <= 1e-5
    # The steps ran the programs compiled above: even the slowest (the first, which has no
    # warm-up) compiled nothing.
    step = rows[cases.index(next(c for c in cases if c.startswith("GRPO step")))]
    slowest = float(re.search(r"-([\d.]+(?:e[+-]\d+)?)\)$", step[3]).group(1))
    assert slowest < 0.2 * measured["compile: update"]


def test_rows_travel_from_a_phase_to_the_driver(tmp_path):
    """A row as a phase writes it (JSON lines, appended) is the row the driver reads back; a
    line still being written waits for its end."""
    row = Row(benchmark="grpo_step", case="tiny", unit="steps/s", ours=Stat(2.0, 1.0, 3.0),
              peer=Stat(1.0, 1.0, 1.0), peer_name="trl", target=3.0, note="n",
              paired=Stat(2.0, 1.5, 2.5))
    path = tmp_path / "rows.jsonl"
    reader = device_run.RowReader(str(path))
    assert reader.new() == []
    line = json.dumps({"row": dataclasses.asdict(row)})
    path.write_text(line[:10])
    assert reader.new() == []
    path.write_text(line + "\n")
    (entry,) = reader.new()
    assert device_run.read_row(entry["row"]) == row
    assert reader.new() == []


def test_the_driver_reads_what_a_phase_is_doing(capsys):
    progress("compile update: lowered in 1.0 s; XLA compiling")
    (line,) = capsys.readouterr().out.splitlines()
    assert device_run.PROGRESS.match(line).group(1) == (
        "compile update: lowered in 1.0 s; XLA compiling")


def test_the_driver_leaves_jax_to_the_phases():
    """The driver process must not take the accelerator (JAX preallocates most of a GPU's
    memory): it imports no JAX at all."""
    code = "import sys, benchmarks.device_run; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_default_budgets_fit_a_ten_minute_lease():
    grace = 5.0  # --grace_s's default
    worst = sum(device_run.BUDGETS.values()) + len(device_run.BUDGETS) * (1.0 + grace)
    assert worst <= 500  # leaves 100 s of 600 for the machine's start and the wheels


def test_decoder_matmul_params_count_the_models_own_kernels():
    config = smoke_config()  # granite_speech_2b's structure; building the real one takes 25 s
    lm = abstract_model(config).language_model
    layer = nnx.state(lm.layers[0], nnx.Param)
    kernels = [x for path, x in jax.tree.leaves_with_path(layer)
               if jax.tree_util.keystr(path).endswith("['kernel'].value")]
    assert len(kernels) == 7  # q, k, v, o, gate, up, down
    table = lm.embed_tokens.embedding  # the tied head reads the embedding table
    assert decoder_matmul_params(config) == (sum(math.prod(k.shape) for k in kernels),
                                             math.prod(table.shape))
