"""The work directory and the cache: one that cannot be written stops the run at start-up with
one line naming it (exit status 2), and paths with spaces and non-ASCII characters work end to
end."""

import json
import os
import subprocess
import sys

import pytest

from sallm_jax.run.experiment import NotWritable, require_writable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args, cache, timeout=300):
    """`python -m sallm_jax.main --config=sqa_grpo:smoke ARGS` with SALLM_JAX_CACHE=cache:
    (exit status, stderr)."""
    out = subprocess.run([sys.executable, "-m", "sallm_jax.main", "--config=sqa_grpo:smoke",
                          *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "SALLM_JAX_CACHE": str(cache)})
    return out.returncode, out.stderr


def test_a_directory_under_a_file_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotWritable, match=r"^cache .*/file/cache: cannot write there \(Not a "
                                          r"directory\); set SALLM_JAX_CACHE"):
        require_writable(tmp_path / "file" / "cache", "cache", "set SALLM_JAX_CACHE")
    require_writable(tmp_path / "new" / "dir", "cache", "")  # made, and written
    assert (tmp_path / "new" / "dir").is_dir() and not any((tmp_path / "new" / "dir").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_read_only_directory_cannot_be_written(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(NotWritable, match=r"ro: cannot write there \(Permission denied\)"):
        require_writable(tmp_path / "ro", "work directory", "")


def test_an_unwritable_work_directory_or_cache_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    status, stderr = train(f"--workdir={tmp_path / 'file' / 'run'}", cache=tmp_path / "cache")
    assert status == 2 and stderr.splitlines() == [
        f"error: work directory {tmp_path / 'file' / 'run'}: cannot write there (Not a "
        "directory); give --workdir a directory you can write"], stderr
    status, stderr = train(f"--workdir={tmp_path / 'run'}", cache=tmp_path / "file" / "cache")
    assert status == 2 and stderr.splitlines() == [
        f"error: cache {tmp_path / 'file' / 'cache'}: cannot write there (Not a directory); "
        "set SALLM_JAX_CACHE to a directory you can write"], stderr


@pytest.mark.slow
def test_paths_with_spaces_and_non_ascii_characters_work(tmp_path):
    """The embedded data is built in the cache, so its manifests and clips live there too."""
    workdir, cache = tmp_path / "wörk dir" / "rün 1", tmp_path / "cäche dir"
    status, stderr = train("--config.stages=('warmup', 'eval')", "--config.warmup.start=init",
                           "--config.warmup.steps=2", f"--workdir={workdir}", cache=cache,
                           timeout=900)
    assert status == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert (workdir / "warmup" / "params").is_dir() and (workdir / "report.md").is_file()
    assert json.loads((workdir / "results.json").read_text())["warmup"]["test"]["num_examples"]
    assert any(cache.rglob("*.wav"))
