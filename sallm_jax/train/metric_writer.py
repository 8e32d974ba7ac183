"""Training records: console lines, metrics.jsonl, TensorBoard (W&B with `logging.wandb`), and
GRPO's completions.jsonl."""

from __future__ import annotations

import json
import logging
import os
import pathlib

import jax
from tensorboardX import SummaryWriter

from sallm_jax.runtime.long_text import shorten
from sallm_jax.train.wandb_mirror import WandbMirror, WandbSettings


def truncate_records(path: pathlib.Path, last_step: int) -> None:
    """Keep `path`'s records up to `last_step`, dropping a line a kill cut; atomic."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # the partial last line of a killed write
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)


def shown_group(group: dict) -> dict:
    """A logged group (`completions_table` record) with its texts cut (`long_text.shorten`)."""
    return {**group, "question": shorten(group["question"]),
            "reference": shorten(group["reference"]),
            "samples": [{**sample, "completion": shorten(sample["completion"])}
                        for sample in group["samples"]]}


class MetricWriter:
    """Scalars to `<directory>/metrics.jsonl`, TensorBoard and a log line; GRPO groups to
    `<directory>/completions.jsonl`; with `wandb`, the same to W&B. Only process 0 writes."""

    def __init__(self, directory: pathlib.Path, stage: str, resume_step: int = 0,
                 wandb: WandbSettings | None = None):
        """`resume_step`: records after it (to be written again) are dropped."""
        self.stage = stage
        self.active = jax.process_index() == 0
        if not self.active:
            return
        directory.mkdir(parents=True, exist_ok=True)
        # first: a run W&B refuses leaves no file open behind its error
        self.mirror = WandbMirror(wandb, directory, stage) if wandb else None
        self.directory, self.completions = directory, None
        path = directory / "metrics.jsonl"
        truncate_records(path, resume_step)
        truncate_records(directory / "completions.jsonl", resume_step)
        self.jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.tb = SummaryWriter(str(directory / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, metrics: dict[str, float], progress: str = "") -> None:
        """Record `metrics` at `step`; `progress` (StageProgress.describe) ends the log line."""
        if not self.active:
            return
        record = {"stage": self.stage, "step": step, **{k: float(v) for k, v in metrics.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        tagged = {f"{self.stage}/{name}": float(value) for name, value in metrics.items()}
        for tag, value in tagged.items():
            self.tb.add_scalar(tag, value, step)
        if self.mirror:
            self.mirror.scalars(step, tagged)
        summary = " ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
        logging.info("[%s] step %d %s%s", self.stage, step, summary,
                     f" | {progress}" if progress else "")

    def write_completions(self, step: int, groups: list[dict]) -> None:
        """Append the step's groups to completions.jsonl, texts cut (`shown_group`); the first group
        also goes to TensorBoard text, W&B and the log."""
        if not self.active or not groups:
            return
        groups = [shown_group(group) for group in groups]
        if self.completions is None:
            self.completions = open(self.directory / "completions.jsonl", "a",  # noqa: SIM115
                                    encoding="utf-8")
        self.completions.write(json.dumps({"stage": self.stage, "step": step,
                                           "groups": groups}) + "\n")
        self.completions.flush()
        first = groups[0]
        text = "\n".join([f"{first['id']}: {first['question']!r} (reference: "
                          f"{first['reference']!r})"] + [
            f"[reward {s['reward']:.3f}, advantage {s['advantage']:+.3f}] {s['completion']!r}"
            for s in first["samples"]])
        self.tb.add_text(f"{self.stage}/completions", text, step)
        if self.mirror:
            self.mirror.completions(step, f"{self.stage}/completions", first)
        logging.info("[%s] step %d completions:\n%s", self.stage, step, text)

    def close(self) -> None:
        if not self.active:
            return
        self.jsonl.close()
        if self.completions is not None:
            self.completions.close()
        self.tb.close()
        if self.mirror:
            self.mirror.close()
