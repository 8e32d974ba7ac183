"""A stage that stops on an error while its checkpoint is being written in the background: the
writer stops cleanly (the error is the last line, no Orbax shutdown tracebacks, no temporary
step folder), and a disk that is full or cannot be written is one error naming the folder, the
space a checkpoint needs and the space free.

The two end-to-end cases run tests/train/stage_fault.py in a process of its own (what the
interpreter prints at exit is part of what is checked); the disk-full one mounts a 40 MB tmpfs
in a user namespace, and is skipped where the machine allows none. The rest simulate the OS
errors in process."""

from __future__ import annotations

import collections
import errno
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from sallm_jax.train import disk_errors
from sallm_jax.train.checkpoint import Checkpointer
from sallm_jax.train.disk_errors import DiskWriteError
from sallm_jax.train.params_io import save_params
from sallm_jax.train.state import create_train_state
from tests.train.stage_fault import BAD_EXAMPLE, TX

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPORARY = ".orbax-checkpoint-tmp"


def run_stage(data, workdir, megabytes, bad_step, *, inside=lambda command: command):
    """Run stage_fault.py (through `inside`, which wraps a command); (exit code, stderr's
    non-blank lines)."""
    command = inside([sys.executable, "-m", "tests.train.stage_fault", str(data), str(workdir),
                      str(megabytes), str(bad_step)])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def folders(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_bad_example_mid_stage_stops_the_writer_cleanly(tmp_path):
    # 64 MB of state: step 2's save is still being written when step 3 meets the bad example.
    code, lines = run_stage(tmp_path / "data", tmp_path / "work", 64, bad_step=3)
    assert code == 1
    assert lines[-1] == f"sallm_jax.data.bad_input.BadInputError: {BAD_EXAMPLE}"
    assert sum("Traceback" in line for line in lines) == 1, "\n".join(lines)
    steps = folders(tmp_path / "work" / "checkpoints")
    assert not [s for s in steps if TEMPORARY in s]
    assert "2" in steps  # the save under way was finished, not thrown away


def on_a_small_tmpfs(mount_point: pathlib.Path):
    """A wrapper that runs a command with a 40 MB tmpfs at `mount_point`, in a mount namespace
    of its own (nothing to unmount afterwards)."""
    script = f"mount -t tmpfs -o size=40m none {shlex.quote(str(mount_point))} && exec \"$@\""
    return lambda command: ["unshare", "-rm", "sh", "-c", script, "sh", *command]


def test_a_full_disk_is_one_error_naming_the_folder_and_the_space(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    inside = on_a_small_tmpfs(small)
    if shutil.which("unshare") is None or subprocess.run(inside(["true"])).returncode:
        pytest.skip("no 40 MB tmpfs here: mounting one needs root or user namespaces")
    work = small / "work"
    code, lines = run_stage(tmp_path / "data", work, 64, bad_step=0, inside=inside)
    assert code == 1
    # 64 MiB of float32 weights (SGD keeps no optimiser state) on a 40 MB disk.
    assert lines[-1].startswith(
        f"sallm_jax.train.disk_errors.DiskWriteError: cannot write a checkpoint to "
        f"{work / 'checkpoints'}: No space left on device; it needs about 64.0 MB, and ")
    assert lines[-1].endswith(" MB is free there. Free some space (or give a --workdir on a "
                              "disk that has it) and run the same command again: it resumes "
                              "from the last complete checkpoint")
    # Raised once, with Orbax's error as its cause: no copies logged by Orbax's threads.
    assert sum("Traceback" in line for line in lines) == 2, "\n".join(lines)
    assert sum("No space left on device" in line for line in lines) == 2


Usage = collections.namedtuple("Usage", "total used free")


@pytest.fixture
def five_megabytes_free(monkeypatch):
    monkeypatch.setattr(disk_errors.shutil, "disk_usage", lambda path: Usage(0, 0, 5 * 2**20))


def one_megabyte_state():
    return create_train_state({"w": jnp.asarray(np.ones((256, 1024), np.float32))}, TX)


# How Orbax reports a write TensorStore could not make (its text quotes the OS error), and an
# OSError raised on the way (a metadata file).
ORBAX_ENOSPC = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed to '
                          "write 1048576 bytes to file 8: No space left on device "
                          "[os_error_code='28']")
READ_ONLY = OSError(errno.EROFS, os.strerror(errno.EROFS), "_CHECKPOINT_METADATA")
DENIED = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "d/1")


@pytest.mark.parametrize("error, reason", [
    (ORBAX_ENOSPC, "No space left on device"), (READ_ONLY, "Read-only file system"),
    (DENIED, "Permission denied")])
def test_a_write_that_fails_for_want_of_disk_names_folder_and_space(
        tmp_path, monkeypatch, five_megabytes_free, error, reason):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    state = one_megabyte_state()
    assert ckpt.save(1, state, force=True)
    (tmp_path / "checkpoints" / f"2{TEMPORARY}").mkdir()  # what the failed write left

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt.manager, "save", fail)
    with pytest.raises(DiskWriteError) as caught, ckpt:
        ckpt.save(2, state, force=True)
    assert str(caught.value) == (
        f"cannot write a checkpoint to {tmp_path / 'checkpoints'}: {reason}; it needs about "
        "1.0 MB, and 5.0 MB is free there. Free some space (or give a --workdir on a disk that "
        "has it) and run the same command again: it resumes from the last complete checkpoint")
    assert caught.value.__cause__ is error
    assert folders(tmp_path / "checkpoints") == ["1"]


def test_other_errors_pass_unchanged_and_leave_no_temporary_folder(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    with pytest.raises(KeyError, match="a bug"), ckpt:
        ckpt.save(1, one_megabyte_state(), force=True)
        (tmp_path / "checkpoints" / f"7{TEMPORARY}").mkdir()
        raise KeyError("a bug")
    assert folders(tmp_path / "checkpoints") == ["1"]


def test_parameters_that_cannot_be_written_name_folder_and_space(tmp_path, monkeypatch,
                                                                  five_megabytes_free):
    def fail(*args, **kwargs):
        raise ORBAX_ENOSPC

    monkeypatch.setattr("orbax.checkpoint.StandardCheckpointer.save", fail)
    with pytest.raises(DiskWriteError, match=(
            rf"^cannot write parameters to {tmp_path / 'best-4'}: No space left on device; it "
            r"needs about 1\.0 MB, and 5\.0 MB is free there")):
        save_params(tmp_path / "best-4", {"w": jnp.ones((256, 1024), jnp.float32)})
