"""W&B beside TensorBoard (`logging.wandb`): an offline run, read back from its `.wandb` log,
holds exactly the scalars of metrics.jsonl under TensorBoard's tags and the completions table;
wandb is imported only when the option is on, and without it the option is a config error."""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys

import pytest
from flax import nnx
from sallm_jax.configs.base import base_config

from sallm_jax.parallel.mesh import make_mesh
from sallm_jax.parallel.partitioner import Partitioner
from sallm_jax.report.runs import stage_events
from sallm_jax.run.validate import validate_config
from sallm_jax.runtime.user_errors import ConfigError
from sallm_jax.train.loop import TrainingLoop
from sallm_jax.train.metric_writer import MetricWriter
from sallm_jax.train.wandb_mirror import COMPLETION_COLUMNS, WandbSettings, wandb_settings
from tests.batch_spec import qwen2_audio_chat
from tests.train.test_loop import SPEC, TX, Line, Steps, section

BLOCK, HEADER, CHUNK_HEADER = 32768, 7, 7  # LevelDB log framing, after W&B's 7-byte header
FULL, LAST = 1, 4


def log_records(data: bytes) -> list[bytes]:
    """The records of a `.wandb` file: a ":W&B" header, then LevelDB's log format, 32 KiB
    blocks of chunks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle or
    last) with a block's tail too short for a chunk header left as padding."""
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", HEADER
    while offset + CHUNK_HEADER <= len(data):
        left = BLOCK - offset % BLOCK
        if left < CHUNK_HEADER:
            offset += left
            continue
        length, kind = struct.unpack("<HB", data[offset + 4:offset + CHUNK_HEADER])
        pending += data[offset + CHUNK_HEADER:offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            records.append(pending)
            pending = b""
    return records


def wandb_written() -> None:
    """Wait until wandb's service has written its runs out: `finish` may return before the
    `.wandb` log is flushed (a process's first run, with wandb 0.31: only its header was on
    disk); shutting the service down completes it, as a process's exit does."""
    import wandb

    wandb.teardown()


def wandb_history(run_dir: pathlib.Path) -> dict[int, dict]:
    """Step -> the values logged at it (internal "_" keys left out), from the run's log."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run_dir.glob("*.wandb")
    history: dict[int, dict] = {}
    for data in log_records(log.read_bytes()):
        record = wandb_internal_pb2.Record.FromString(data)
        if record.WhichOneof("record_type") != "history":
            continue
        items: dict = {}
        for item in record.history.item:  # a logged dict's entries come as key paths
            *parents, key = list(item.nested_key) or [item.key]
            node = items
            for parent in parents:
                node = node.setdefault(parent, {})
            node[key] = json.loads(item.value_json)
        history.setdefault(record.history.step.num, {}).update(
            {k: v for k, v in items.items() if not k.startswith("_")})
    return history


def group(step: int) -> dict:
    """A logged group as `sallm_jax.rl.scoring.completions_table` writes it."""
    return {"id": f"q{step}", "question": "What is said?", "reference": "a cat",
            "samples": [{"completion": "a cat", "reward": 1.0, "advantage": 0.5},
                        {"completion": "a dog", "reward": 0.25, "advantage": -0.25}]}


SETTINGS = WandbSettings(project="sallm_jax_test", entity="", name="run",
                         config={"grpo": {"beta": 0.02}})


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """wandb in offline mode, writing under tmp_path only: nothing reaches the network."""
    pytest.importorskip("wandb")
    for name, value in [("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)),
                        ("WANDB_SILENT", "true"), ("WANDB_DISABLE_GIT", "true")]:
        monkeypatch.setenv(name, value)


def jsonl_scalars(directory: pathlib.Path, stage: str) -> dict[int, dict]:
    """Step -> metrics.jsonl's values at it, under TensorBoard's tags ("<stage>/<name>")."""
    expected: dict[int, dict] = {}
    for line in (directory / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        expected.setdefault(record["step"], {}).update(
            {f"{stage}/{k}": v for k, v in record.items() if k not in ("stage", "step")})
    return expected


def test_offline_run_holds_what_tensorboard_and_metrics_jsonl_hold(tmp_path, offline_wandb):
    directory = tmp_path / "grpo"
    writer = MetricWriter(directory, "grpo", wandb=SETTINGS)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 0.1 * step + 1e-9, "reward": 1 / 3 + step})
        writer.write_completions(step, [group(step), {**group(step), "id": "other"}])
    writer.write(3, {"validation_score": 0.725})  # a second record at the same step
    writer.close()
    wandb_written()

    expected = jsonl_scalars(directory, "grpo")
    (run_dir,) = (directory / "wandb").glob("offline-run-*")
    history = wandb_history(run_dir)
    tables = {step: values.pop("grpo/completions") for step, values in history.items()}
    assert history == expected  # the same floats, under TensorBoard's tags

    scalar_tags = {v.tag for e in stage_events(directory) for v in e.summary.value
                   if v.HasField("simple_value")}
    assert scalar_tags == {tag for values in expected.values() for tag in values}
    for step, table in tables.items():  # what TensorBoard's text shows: the first group
        assert table["_type"] == "table-file"
        logged = json.loads((run_dir / "files" / table["path"]).read_text())
        assert logged["columns"] == list(COMPLETION_COLUMNS)
        assert logged["data"] == [[f"q{step}", "What is said?", "a cat", 1.0, 0.5, "a cat"],
                                  [f"q{step}", "What is said?", "a cat", 0.25, -0.25, "a dog"]]


def test_a_training_loop_logs_its_records_to_wandb(tmp_path, small_sqa, offline_wandb):
    """The loop hands the settings to its writer: a stage's run gets its records."""
    rows, tok = small_sqa
    _, params = nnx.split(Line())
    loop = TrainingLoop("toy", section(3), params=params, tx=TX, rows=rows["train"],
                        chat=qwen2_audio_chat(tok), spec=SPEC, workdir=tmp_path / "toy",
                        seed=3, partitioner=Partitioner(make_mesh({"data": -1}), ()),
                        wandb=SETTINGS)
    loop.run(Steps(loop))
    wandb_written()
    (run_dir,) = (tmp_path / "toy" / "wandb").glob("offline-run-*")
    expected = jsonl_scalars(tmp_path / "toy", "toy")
    assert sorted(expected) == [2, 3] and wandb_history(run_dir) == expected


def test_settings_follow_the_logging_section(tmp_path):
    cfg = base_config()
    assert wandb_settings(cfg, tmp_path / "exp1") is None  # off by default
    cfg.logging.wandb = True
    settings = wandb_settings(cfg, tmp_path / "exp1")
    assert (settings.project, settings.name, settings.entity) == ("sallm_jax", "exp1", "")
    assert settings.config["grpo"]["beta"] == cfg.grpo.beta
    cfg.logging.wandb_run_name = "named"
    assert wandb_settings(cfg, tmp_path / "exp1").name == "named"


def test_without_wandb_the_option_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    cfg = base_config()
    validate_config(cfg)  # off: nothing is imported
    cfg.logging.wandb = True
    with pytest.raises(ConfigError, match=r"logging\.wandb: .*pip install 'sallm_jax\[wandb\]'"):
        validate_config(cfg)


def test_not_logged_in_is_a_config_error(tmp_path, monkeypatch):
    """Online, with no API key anywhere and no terminal to ask on: one line naming the option
    and the ways out, raised before any network call."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name, value in [("HOME", str(tmp_path)), ("WANDB_MODE", "online"),
                        ("WANDB_CONFIG_DIR", str(tmp_path / "config")),
                        ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true")]:
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"logging\.wandb: W&B would not start a run .*"
                                          r"WANDB_MODE=offline"):
        MetricWriter(tmp_path / "grpo", "grpo", wandb=SETTINGS)


def test_training_modules_do_not_import_wandb():
    code = ("import sys, sallm_jax.train.metric_writer, sallm_jax.run.validate; "
            "assert 'wandb' not in sys.modules, 'wandb imported'")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
