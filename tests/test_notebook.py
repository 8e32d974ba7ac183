"""notebooks/quickstart.ipynb end to end in a kernel (nbclient): the smoke preset runs, then the
curves, the SFT-vs-GRPO table, playable clips and a GRPO group with its advantages show."""

import json
import pathlib
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def outputs(cell, mime):
    return [o["data"][mime] for o in cell.get("outputs", []) if mime in o.get("data", {})]


def test_quickstart_notebook_runs(tmp_path, smoke_cache, monkeypatch):
    workdir = tmp_path / "quickstart"
    # The kernel inherits this environment: the shared smoke cache (data, base, programs).
    monkeypatch.setenv("SALLM_JAX_CACHE", str(smoke_cache))
    monkeypatch.setenv("QUICKSTART_WORKDIR", str(workdir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    cells = [c for c in notebook.cells if c.cell_type == "code"]

    assert set(json.loads((workdir / "results.json").read_text())) == {"base", "warmup", "sft",
                                                                        "grpo"}
    assert (workdir / "report.md").exists()
    plots = sorted((workdir / "plots").glob("*.png"))
    assert len(outputs(cells[2], "image/png")) == min(6, len(plots)) and plots

    table = "\n".join(outputs(cells[3], "text/markdown"))
    for stage in ("warmup", "sft", "grpo"):
        assert f"| {stage} | test | sampled, top-p 0.9, T 0.9, 2 draws" in table
        assert f"| {stage} | test_greedy | greedy |" in table
    assert "| base |" not in table

    clips = "\n".join(outputs(cells[4], "text/html"))
    assert clips.count("<audio") == 3
    answers = outputs(cells[4], "text/markdown")
    assert len(answers) == 3 and all("**grpo, greedy:**" in a and "**reference:**" in a
                                     for a in answers)

    group = "\n".join(outputs(cells[5], "text/markdown"))
    rows = re.findall(r"^\| (\d+) \| ([-\d.]+) \| ([-+\d.]+) \|", group, re.M)
    assert len(rows) == 4  # the smoke preset's group size
    rewards = np.array([float(r) for _, r, _ in rows])
    # The smoke preset keeps grpo.scale_rewards = "none": the logged advantage is r - mean(r).
    np.testing.assert_allclose([float(a) for *_, a in rows], rewards - rewards.mean(),
                               atol=1.5e-3)
