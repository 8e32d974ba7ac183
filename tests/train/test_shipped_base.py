"""Shipped bases: `sallm-jax build-base` writes one, a run with an empty cache loads it in place
of training (the same parameters and tokenizer as the build), a folder whose name is not its
settings' key is refused, and each base shipped in the package reproduces its build's first
logged steps."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.models.families import families
from sallm_jax.run.experiment import Experiment
from sallm_jax.train import shipped_base
from sallm_jax.train.base import base_directory, base_settings, settings_key
from sallm_jax.train.params_io import restore_params
from sallm_jax.train.shipped_base import load_shipped, params_like

ROOT = pathlib.Path(__file__).resolve().parents[2]


def qwen2_audio(tied: bool, seed: int = 0):
    family = families()["qwen2_audio"]
    sizes = family.tiny_sizes()
    sizes["text"]["tie_word_embeddings"] = tied
    config = family.from_sizes(sizes["audio"], sizes["text"], vocab_size=64, audio_token_id=3)
    return family.model_class(config, rngs=nnx.Rngs(seed))


def flat(state):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(state)}


def test_params_like_takes_a_tied_head_and_refuses_other_extras():
    tied, untied = qwen2_audio(tied=True), qwen2_audio(tied=False, seed=1)
    like = nnx.state(tied, nnx.Param)  # the structure only: its values are another draw
    head = untied.language_model.lm_head.kernel
    head.set_value(untied.language_model.embed_tokens.embedding.get_value().T)
    taken = flat(params_like(untied, like))
    assert taken.keys() == flat(like).keys()
    for path, value in flat(nnx.state(untied, nnx.Param)).items():
        if path in taken:
            np.testing.assert_array_equal(taken[path], value)
    head.set_value(head.get_value() + 1.0)  # no longer the table's transpose
    with pytest.raises(ValueError, match="language_model/lm_head/kernel: in the checkpoint, "
                                         "not in the run's model, and not a tied head"):
        params_like(untied, like)
    with pytest.raises(ValueError, match="language_model/lm_head/kernel: not in the checkpoint"):
        params_like(tied, nnx.state(untied, nnx.Param))


def build_base(config: str, out: pathlib.Path, cache: pathlib.Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "SALLM_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "sallm_jax.commands.build_base",
                             f"--config={config}", f"--out={out}"], env=env, cwd=ROOT,
                            text=True, **popen)


@pytest.mark.slow
def test_a_built_base_is_loaded_by_a_run_with_an_empty_cache(tmp_path, smoke_cache,
                                                              monkeypatch):
    out = tmp_path / "bases"
    built = build_base("configs/sqa_grpo.py:smoke", out, smoke_cache, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    log = built.communicate(timeout=1800)[0]
    assert built.returncode == 0, log[-3000:]
    cfg = get_config("smoke")
    key = base_directory(cfg, smoke_cache).name
    shipped = out / key
    assert {p.name for p in shipped.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "base.json", "build_log.jsonl",
        "BUILD.md"}
    assert json.loads((shipped / "base.json").read_text())["settings"] == base_settings(cfg)

    monkeypatch.setattr(shipped_base, "SHIPPED_DIR", out)
    empty = tmp_path / "cache"
    monkeypatch.setenv("SALLM_JAX_CACHE", str(empty))
    # The corpus is built as before; the tokenizer and parameters come from the shipped base.
    shutil.copytree(smoke_cache / "embedded_asr", empty / "embedded_asr")
    experiment = Experiment(cfg, tmp_path / "run")
    installed = empty / "base" / key
    record = json.loads((installed / "base.json").read_text())
    assert record["shipped"] == str(shipped) and not (installed / "train").exists()
    original = restore_params(smoke_cache / "base" / key / "params", experiment.initial,
                              experiment.partitioner)
    loaded = restore_params(installed / "params", experiment.initial, experiment.partitioner)
    for path, value in flat(original).items():
        np.testing.assert_array_equal(flat(loaded)[path], value, err_msg=str(path))
    built_tokenizer = (smoke_cache / "base" / key / "tokenizer" / "tokenizer.json").read_text()
    assert json.loads((installed / "tokenizer" / "tokenizer.json").read_text())["model"] == (
        json.loads(built_tokenizer)["model"])


def test_a_renamed_shipped_base_is_refused(tmp_path):
    folder = tmp_path / "0123456789abcdef"
    folder.mkdir()
    settings = base_settings(get_config("tiny"))
    (folder / "base.json").write_text(json.dumps({"settings": settings}))
    with pytest.raises(ValueError, match=f"hash to {settings_key(settings)}, not to the "
                                         "folder's name"):
        load_shipped(folder)


def logged(lines):
    return {r["step"]: r for r in map(json.loads, lines)}


@pytest.mark.slow
@pytest.mark.parametrize("shipped", sorted(p for p in shipped_base.SHIPPED_DIR.glob("*")
                                           if p.is_dir()), ids=lambda p: p.name)
def test_a_shipped_base_reproduces_its_first_logged_steps(shipped, tmp_path):
    """The main job's config builds the shipped base (its key), and building it again from
    scratch logs the build's first steps: the loss, CTC loss and gradient norm at the first
    logged step, within 1e-4 relative (another CPU may round differently)."""
    cfg = get_config("tiny")
    assert base_directory(cfg, tmp_path).name == shipped.name
    first = min(logged((shipped / "build_log.jsonl").read_text().splitlines()))
    build = build_base("configs/sqa_grpo.py", tmp_path / "out", tmp_path / "cache",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cache" / "base" / shipped.name / "train" / "metrics.jsonl"
    deadline = time.monotonic() + 1800
    while not (metrics.exists() and first in logged(metrics.read_text().splitlines())):
        assert build.poll() is None and time.monotonic() < deadline, build.returncode
        time.sleep(2)
    build.send_signal(signal.SIGTERM)
    build.wait(timeout=600)
    again = logged(metrics.read_text().splitlines())[first]
    expected = logged((shipped / "build_log.jsonl").read_text().splitlines())[first]
    for name in ("loss", "ctc_loss", "grad_norm"):
        assert again[name] == pytest.approx(expected[name], rel=1e-4), name
