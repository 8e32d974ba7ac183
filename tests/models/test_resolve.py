"""Checkpoint names: a directory as it is; a Hub id (with an optional @revision) through
huggingface_hub's cache, laid out here by hand as `snapshot_download` leaves it, read offline
with HF_HOME and HF_HUB_OFFLINE set in a fresh process (huggingface_hub reads both when first
imported, as a user's run does); and one clear line for what cannot be found."""

import json
import os
import subprocess
import sys

import pytest

from sallm_jax.models.hub.resolve import CheckpointNotFound, resolve_checkpoint

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


def lay_out_cache(home, repo_id: str, refs: dict[str, str]) -> None:
    """A cache holding `repo_id` at REVISION, with `refs` (branch -> revision)."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "granite_speech"}))
    (repo / "refs").mkdir()
    for branch, revision in refs.items():
        (repo / "refs" / branch).write_text(revision)


def resolve_offline(home, name: str) -> subprocess.CompletedProcess:
    code = ("import sys; from sallm_jax.models.hub.resolve import resolve_checkpoint as r\n"
            "try:\n    print(r(sys.argv[1], 'model.checkpoint'))\n"
            "except FileNotFoundError as e:\n    print(e); sys.exit(2)")
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code, name], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", ["ibm-granite/granite-speech-3.3-2b",
                                  "ibm-granite/granite-speech-3.3-2b@main",
                                  f"ibm-granite/granite-speech-3.3-2b@{REVISION}"])
def test_a_hub_id_resolves_offline_to_its_snapshot(tmp_path, name):
    lay_out_cache(tmp_path, "ibm-granite/granite-speech-3.3-2b", {"main": REVISION})
    out = resolve_offline(tmp_path, name)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = (tmp_path / "hub" / "models--ibm-granite--granite-speech-3.3-2b" / "snapshots"
                / REVISION)
    assert out.stdout.strip() == str(expected)


def test_an_id_missing_from_the_offline_cache_is_one_line(tmp_path):
    lay_out_cache(tmp_path, "ibm-granite/granite-speech-3.3-2b", {"main": REVISION})
    out = resolve_offline(tmp_path, "Qwen/Qwen2-Audio-7B-Instruct")
    assert out.returncode == 2
    (line,) = out.stdout.strip().splitlines()
    assert line.startswith("model.checkpoint='Qwen/Qwen2-Audio-7B-Instruct': ")
    assert "not in the cache" in line and "HF_HUB_OFFLINE" in line and str(tmp_path) in line


def test_an_unknown_revision_offline_is_one_line(tmp_path):
    lay_out_cache(tmp_path, "ibm-granite/granite-speech-3.3-2b", {"main": REVISION})
    out = resolve_offline(tmp_path, "ibm-granite/granite-speech-3.3-2b@v9")
    assert out.returncode == 2 and "not in the cache" in out.stdout, out.stdout + out.stderr


def test_a_local_directory_comes_first(tmp_path, monkeypatch):
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("org/name", "model.checkpoint") == local.relative_to(tmp_path)


@pytest.mark.parametrize("name", ["/no/such/dir", "not a hub id", "a/b/c"])
def test_neither_a_directory_nor_an_id(name):
    with pytest.raises(CheckpointNotFound, match=r"^lora\.adapter_dir=.*no such directory"):
        resolve_checkpoint(name, "lora.adapter_dir")
