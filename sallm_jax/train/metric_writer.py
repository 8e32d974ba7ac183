"""Training feedback: one-line console logs, a metrics JSONL, TensorBoard event files (and,
with `logging.wandb`, a W&B run receiving the same) and (GRPO) a JSONL table of logged
completions, its long texts cut."""

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
    """Keep the records of `path` up to step `last_step` (and drop a line cut short by a kill),
    rewriting the file atomically; nothing when it does not exist."""
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
    """A logged group (`completions_table` record) with its question, reference and
    completions cut to what the log and the reports show (`long_text.shorten`)."""
    return {**group, "question": shorten(group["question"]),
            "reference": shorten(group["reference"]),
            "samples": [{**sample, "completion": shorten(sample["completion"])}
                        for sample in group["samples"]]}


class MetricWriter:
    """Writes scalars to `<directory>/metrics.jsonl` and TensorBoard, and logs a summary line;
    logged GRPO groups go to `<directory>/completions.jsonl`. With `wandb` settings a W&B run
    (`WandbMirror`) gets what TensorBoard gets.

    Only process 0 writes (the scalars it receives are already combined over processes).
    """

    def __init__(self, directory: pathlib.Path, stage: str, resume_step: int = 0,
                 wandb: WandbSettings | None = None):
        """`resume_step`: the step a resumed stage restarts after. Records past it (written
        before a kill, and about to be written again) leave metrics.jsonl, and TensorBoard
        purges its events from the step after it, so each step appears once."""
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
        """Append the step's logged groups (`completions_table` records) to completions.jsonl,
        and show the first group in TensorBoard text (and a W&B table), and the log; long texts
        are cut (`shown_group`)."""
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
