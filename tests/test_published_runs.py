"""The paper presets run end to end, cut down, on checkpoints laid out like the published ones
(tests/models/published.py), of both families, with and without LoRA: `sallm_jax.main` as a
user runs it, at each preset's own prompt limit. The Granite Speech run names its checkpoint by
Hub id, resolved offline from a huggingface_hub cache laid out by hand.

That the prompts are the processors' and that the audio reaches the model is tested in
tests/models/test_published_prompts.py; here each preset must finish with every test row scored.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from sallm_jax.data.manifest import ManifestRow, write_manifest  # noqa: E402
from tests.models.published import save_published  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUB_ID = "ibm-granite/granite-speech-3.3-2b"
REVISION = "0123456789abcdef0123456789abcdef01234567"
SPLIT_SIZES = {"train": 4, "validation": 2, "test": 4}

# Every preset cut to 2 SFT and 2 GRPO steps of 2 prompts x 2 samples, 6 new tokens, one
# 5 s audio bucket, and evaluation of 4 test rows in one batch of one sampled draw.
CUT_DOWN = ("sft.steps=2", "sft.batch_size=2", "sft.max_target_tokens=6", "sft.eval_every=0",
            "sft.checkpoint_every=1", "grpo.steps=2", "grpo.batch_size=2", "grpo.group_size=2",
            "grpo.max_completion_length=6", "grpo.eval_every=0", "grpo.checkpoint_every=1",
            "eval.max_new_tokens=6", "eval.batch_size=4", "eval.num_samples=1",
            "eval.greedy=False", "eval.splits=('test',)", "data.audio_buckets_s=(5.0,)")

# (config, family, LoRA: "folder" = the adapter the checkpoint folder carries, "rank" = new
# adapters of rank 8, "" = full fine-tuning, task of the manifests, stages with results).
RUNS = {
    "sqa-paper-granite-folder-adapter": ("sqa_grpo.py:paper", "granite_speech", "folder", "sqa",
                                         ("sft", "grpo")),
    "ast-paper-granite-full": ("ast_grpo.py:paper", "granite_speech", "", "ast",
                               ("sft", "grpo")),
    "ast-paper_mp-qwen2-audio-lora": ("ast_grpo.py:paper_mp", "qwen2_audio", "rank", "ast",
                                      ("sft", "grpo")),
    "aqa-paper-qwen2-audio-full": ("aqa_grpo.py:paper", "qwen2_audio", "", "aqa", ("grpo",)),
}


def task_row(row: ManifestRow, task: str) -> ManifestRow:
    """The spoken-QA row as a row of `task` on the same clip."""
    if task == "ast":
        return ManifestRow(id=row.id, audio=row.audio, task="ast",
                           question="Translate the English speech into German.",
                           answer="Sie ging in den Garten.", source_lang="en", target_lang="de")
    if task == "aqa":
        choices = [row.answer, "the garden", "the bakery", "the school"]
        return ManifestRow(id=row.id, audio=row.audio, task="aqa", question=row.question,
                           answer=row.answer, choices=choices, answer_index=0)
    return row


def hub_cache(home, checkpoint) -> None:
    """`checkpoint` as huggingface_hub's cache under `home` holds HUB_ID at REVISION."""
    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(checkpoint, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)


@pytest.mark.parametrize("run", list(RUNS))
def test_paper_preset_runs_on_a_published_layout(run, small_sqa, tmp_path):
    config, family, lora, task, stages = RUNS[run]
    rows, _ = small_sqa
    checkpoint = tmp_path / "checkpoint"
    save_published(checkpoint, family, adapter=lora == "folder")
    manifests = {split: write_manifest(tmp_path / f"{split}.jsonl",
                                       [task_row(r, task) for r in rows[split][:n]])
                 for split, n in SPLIT_SIZES.items()}
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "SALLM_JAX_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    name = str(checkpoint)
    if family == "granite_speech" and lora == "folder":
        hub_cache(tmp_path / "hf", checkpoint)
        name = HUB_ID
    overrides = [*CUT_DOWN, f"model.checkpoint={name}",
                 *(f"data.{split}_manifest={path}" for split, path in manifests.items())]
    if lora == "rank":
        overrides.append("lora.rank=8")
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "sallm_jax.main", f"--config=configs/{config}",
                          f"--workdir={workdir}", *(f"--config.{o}" for o in overrides)],
                         env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "skipping example" not in out.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert list(results) == list(stages)
    for stage in stages:
        metrics = results[stage]["test"]
        assert metrics["num_examples"] == SPLIT_SIZES["test"] and metrics["num_skipped"] == 0
        assert ("accuracy" if task == "aqa" else "bleu") in metrics, (stage, sorted(metrics))
