"""The accelerator run: its phases one after another, each in a process of its own under a
wall-clock budget, and a Markdown table that is always written.

    bash benchmarks/device.sh [--wheels DIR] [options]     # on a bare device machine
    python -m benchmarks.device_run [options]              # the same where the packages are

The phases, in order, each `python -m benchmarks.device --phase NAME` (default budget):

- smoke (60 s): granite_speech_2b's structure at toy widths through the whole GRPO step,
  to show that the stack runs on the card before the large phase starts;
- granite (300 s): granite_speech_2b at the papers' shapes (16 prompts x G=8, 256 text
  tokens + 10 s of audio, completions of 200): the build, each program's compilation
  (rollout, reference log-probs, update: lowering and XLA compilation timed apart), the
  rollout's tokens/s, the update's MFU, whole steps, peak memory, fused against einsum
  attention;
- trl (120 s): `GRPOStep` against TRL's `GRPOTrainer` at 100M (benchmarks/grpo_step.py).

The budgets sum to 480 s; with the grace periods (5 s each) the run ends by 495 s, which
leaves about 100 s of a 10-minute lease for the machine's start and the wheels' install.

Every line printed starts with the UTC time and the seconds since the run started; the
run's own lines name the phase and its budget, a phase's lines also its seconds so far. A
phase whose budget is spent is sent SIGUSR1 (it prints every thread's Python stack: where it
was), then SIGTERM, and SIGKILL after --grace_s; the run says so and goes on with the next
phase. A phase's rows reach the table as it emits them (benchmarks/device.py emits each as
soon as it is known, the compile rows among them), so a phase cut short keeps what it
measured.

The table (--out, default benchmarks/DEVICE.md) is written at the start and rewritten at each
progress line, row and phase end: a header (date, commit, command, device, budgets), one row
per phase (finished, "budget spent after N s at <its last progress line>", failed, running,
not run) and the measurements. It is printed at the end as well, in case the file does not
come back. A run stopped from outside (SIGTERM, Ctrl-C) stops its phase and writes the table
once more. `--smoke` runs every phase at toy sizes (a CPU test).

This process imports no JAX: the phases own the accelerator, one at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from benchmarks.run import table as peer_table
from benchmarks.timing import Row, Stat

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHASES = {
    "smoke": "granite_speech_2b's structure at toy widths: build, compile, steps",
    "granite": "granite_speech_2b at the papers' shapes: build, compile per program, steps",
    "trl": "GRPOStep against TRL's GRPOTrainer at 100M",
}
BUDGETS = {"smoke": 60.0, "granite": 300.0, "trl": 120.0}
PROGRESS = re.compile(r"^\[device \+\d+ s\] (.*)$")


class Stopped(Exception):
    """The run itself was asked to stop (SIGTERM, SIGINT)."""


@dataclasses.dataclass
class Phase:
    name: str
    budget_s: float
    selected: bool = True
    started_at: float | None = None  # seconds since the run started
    ran_s: float | None = None
    doing: str = "starting Python and importing"
    result: str = ""  # empty while not started or running
    rows: dict[str, Row] = dataclasses.field(default_factory=dict)  # by case, latest wins
    tail: list[str] = dataclasses.field(default_factory=list)  # last lines of its output


def cell(text: str) -> str:
    """`text` safe in one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def number(x: float) -> str:
    return "-" if x != x else f"{x:.4g}"  # NaN: no reference


def read_row(entry: dict) -> Row:
    """A row as `benchmarks.device` wrote it (`dataclasses.asdict`)."""
    stats = {k: Stat(**entry[k]) for k in ("ours", "peer")}
    paired = Stat(**entry["paired"]) if entry.get("paired") else None
    return Row(**{**entry, **stats, "paired": paired})


def commit() -> str:
    """The checkout's commit, and whether tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout here; pass --commit)"
    return head + (" with uncommitted changes" if dirty.strip() else "")


def gpu_names() -> str:
    """nvidia-smi's GPUs (name, driver, memory), before a phase has reported its device."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], text=True, capture_output=True,
                             timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return "; ".join(out.splitlines())


class Run:
    """The phases, the clock and the table."""

    def __init__(self, args: argparse.Namespace, command: str):
        self.args, self.command = args, command
        self.start_wall, self.start = time.time(), time.monotonic()
        self.ended: float | None = None
        self.commit = args.commit or commit()
        self.device, self.gpus = "", gpu_names()
        names = [n.strip() for n in args.phases.split(",") if n.strip()]
        unknown = [n for n in names if n not in PHASES]
        if unknown:
            raise SystemExit(f"--phases: unknown phase {unknown[0]!r}; the phases are "
                             f"{', '.join(PHASES)}")
        self.phases = [Phase(name, getattr(args, f"{name}_s"), selected=name in names)
                       for name in PHASES]
        for phase in self.phases:
            if not phase.selected:
                phase.result = "not run (not in --phases)"
            elif phase.name == "trl" and args.no_peer:
                phase.selected, phase.result = False, "not run (--no_peer)"

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def stamp(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.gmtime())} UTC +{self.elapsed():.0f} s"

    def say(self, message: str) -> None:
        print(f"[{self.stamp()}] {message}", flush=True)

    def status(self, phase: Phase) -> str:
        if phase.result:
            return phase.result
        if phase.started_at is None:
            return "not started"
        return (f"running for {self.elapsed() - phase.started_at:.0f} s at {phase.doing} "
                "(when this file was written)")

    def markdown(self) -> str:
        start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.start_wall))
        ended = ("still running when this file was written" if self.ended is None else
                 f"ended after {self.ended:.0f} s")
        device = self.device or (f"{self.gpus} (nvidia-smi)" if self.gpus else
                                 "not yet reported by a phase")
        budgets = ", ".join(f"{p.name} {p.budget_s:g} s" for p in self.phases if p.selected)
        lines = ["# sallm_jax on an accelerator", "",
                 f"- date: {start}; {ended}", f"- commit: {self.commit}",
                 f"- command: `{self.command}`", f"- device: {device}",
                 f"- budgets: {budgets or 'none'}; a phase over its budget is stopped "
                 f"(SIGTERM, then SIGKILL after {self.args.grace_s:g} s) and the run goes on "
                 "(benchmarks/device_run.py)", "", "## Phases", "",
                 "| phase | what it runs | budget (s) | started | ran (s) | result |",
                 "|---|---|---|---|---|---|"]
        for p in self.phases:
            started = "-" if p.started_at is None else f"+{p.started_at:.0f} s"
            ran = "-" if p.ran_s is None else f"{p.ran_s:.0f}"
            lines.append(f"| {p.name} | {PHASES[p.name]} | {p.budget_s:g} | {started} | {ran} | "
                         f"{cell(self.status(p))} |")
        ours = [(p.name, r) for p in self.phases for r in p.rows.values()
                if r.benchmark == "device"]
        peers = [r for p in self.phases for r in p.rows.values() if r.benchmark != "device"]
        lines += ["", "## Measurements", ""]
        if ours:
            lines += ["| phase | case | unit | measured | reference | reference is | "
                      "measured / reference | note |", "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {name} | {cell(r.case)} | {r.unit} | {r.ours.cell()} | "
                      f"{number(r.peer.median)} | {cell(r.peer_name)} | {number(r.ratio)} | "
                      f"{cell(r.note)} |" for name, r in ours]
        else:
            lines.append("none" if self.ended is not None else "none yet")
        if peers:
            lines += ["", "## Against TRL (float32 both sides)", "", peer_table(peers).rstrip()]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        out = pathlib.Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(self.markdown())
        os.replace(partial, out)

    def run(self, rows_dir: str) -> None:
        self.write()
        selected = [p for p in self.phases if p.selected]
        self.say(f"run: phases {', '.join(f'{p.name} ({p.budget_s:g} s)' for p in selected)}; "
                 f"table in {self.args.out}")
        for phase in selected:
            self.run_phase(phase, os.path.join(rows_dir, f"{phase.name}.jsonl"))
        self.ended = self.elapsed()
        self.write()
        self.say(f"run: done after {self.ended:.0f} s; table in {self.args.out}")
        print(self.markdown(), flush=True)

    def run_phase(self, phase: Phase, rows_path: str) -> None:
        """`phase` in its own process group until it exits or its budget is spent. The group
        stays in this session, and the phase dies with this process (`die_with_parent`)."""
        command = [sys.executable, "-m", "benchmarks.device", "--phase", phase.name,
                   "--rows", rows_path, *(["--smoke"] if self.args.smoke else [])]
        phase.started_at = self.elapsed()
        self.say(f"phase {phase.name} (budget {phase.budget_s:g} s): start: {PHASES[phase.name]}")
        self.write()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                process_group=0,  # its own group, to stop it whole
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "DEVICE_RUN_PID": str(os.getpid())})
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        reader = RowReader(rows_path)
        deadline = time.monotonic() + phase.budget_s
        try:
            spent = not self.follow(phase, proc, lines, reader, deadline)
            if spent:
                self.stop(phase, proc, lines, reader)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            phase.ran_s = self.elapsed() - phase.started_at
            phase.result = (f"stopped from outside after {phase.ran_s:.0f} s at {phase.doing}")
            self.take(phase, reader)
            self.write()
            raise
        phase.ran_s = self.elapsed() - phase.started_at
        self.take(phase, reader)
        if spent:
            phase.result = f"budget spent after {phase.ran_s:.0f} s at {phase.doing}"
            self.say(f"phase {phase.name} (budget {phase.budget_s:g} s): budget spent after "
                     f"{phase.ran_s:.0f} s at {phase.doing}; stopped, going on")
        elif proc.returncode == 0:
            phase.result = f"finished in {phase.ran_s:.0f} s"
            self.say(f"phase {phase.name} (budget {phase.budget_s:g} s): finished in "
                     f"{phase.ran_s:.0f} s")
        else:
            last = next((t for t in reversed(phase.tail) if t and not t[0].isspace()), "")
            phase.result = (f"failed after {phase.ran_s:.0f} s (exit {proc.returncode}) at "
                            f"{phase.doing}: {last[:300]}")
            self.say(f"phase {phase.name} (budget {phase.budget_s:g} s): {phase.result}")
        self.write()

    def follow(self, phase: Phase, proc: subprocess.Popen, lines: queue.Queue,
               reader: RowReader, deadline: float) -> bool:
        """Echo the phase's lines until it exits (True) or `deadline` passes (False)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    return False
                # Stragglers it started (none expected) go with it.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return True
            self.echo(phase, line, reader)

    def echo(self, phase: Phase, line: str, reader: RowReader) -> None:
        print(f"[{self.stamp()} | {phase.name} {self.elapsed() - phase.started_at:.0f}/"
              f"{phase.budget_s:g} s] {line}", flush=True)
        phase.tail = [*phase.tail[-29:], line]
        match = PROGRESS.match(line)
        if match and not match.group(1).startswith("("):  # "(an XLA compilation ...)"
            phase.doing = match.group(1)
        if match or line.startswith("[device] "):
            self.take(phase, reader)
            self.write()

    def stop(self, phase: Phase, proc: subprocess.Popen, lines: queue.Queue,
             reader: RowReader) -> None:
        """SIGUSR1 (the phase prints its threads' stacks), SIGTERM, then SIGKILL."""
        self.say(f"phase {phase.name} (budget {phase.budget_s:g} s): budget spent at "
                 f"{phase.doing}; stopping it (its Python stacks follow)")
        for sig, wait in ((signal.SIGUSR1, 1.0), (signal.SIGTERM, self.args.grace_s),
                          (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                if sig == signal.SIGUSR1:
                    os.kill(proc.pid, sig)  # the phase alone: its helpers have no handler
                else:
                    os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end and (sig == signal.SIGUSR1 or proc.poll() is None):
                try:
                    line = lines.get(timeout=min(max(end - time.monotonic(), 0.01), 0.2))
                except queue.Empty:
                    continue
                if line is None:
                    break
                print(f"[{self.stamp()} | {phase.name} stopping] {line}", flush=True)
                phase.tail = [*phase.tail[-29:], line]
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left
        except ProcessLookupError:
            pass
        proc.wait()

    def take(self, phase: Phase, reader: RowReader) -> None:
        for entry in reader.new():
            if "device" in entry:
                self.device = self.device or entry["device"]
            if "row" in entry:
                row = read_row(entry["row"])
                phase.rows[row.case] = row


class RowReader:
    """The entries a phase has appended to its JSON-lines file since the last call."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                text = f.read()
        except FileNotFoundError:
            return []
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits
        self.offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every phase at toy sizes (CPU)")
    parser.add_argument("--out", default="benchmarks/DEVICE.md", help="Markdown file to write")
    parser.add_argument("--no_peer", action="store_true", help="leave out the trl phase")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated phases to run, in the fixed order")
    for name, seconds in BUDGETS.items():
        parser.add_argument(f"--{name}_s", type=float, default=seconds,
                            help=f"budget of the {name} phase, wall seconds (default {seconds:g})")
    parser.add_argument("--grace_s", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL for a phase over budget")
    parser.add_argument("--commit", default="",
                        help="the commit to name in the header (default: git's, where the "
                             "checkout has its .git)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = os.environ.get("DEVICE_SH_COMMAND") or shlex.join(
        ["python", "-m", "benchmarks.device_run", *argv])
    run = Run(args, command)

    def stopped(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stopped)
    with tempfile.TemporaryDirectory(prefix="device_run_") as rows_dir:
        try:
            run.run(rows_dir)
        except (Stopped, KeyboardInterrupt) as error:
            run.ended = run.elapsed()
            run.write()
            run.say(f"run: stopped from outside ({type(error).__name__} {error}) after "
                    f"{run.ended:.0f} s; table in {args.out}")
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
