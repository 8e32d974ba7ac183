"""`sallm-jax COMMAND [FLAGS]`: every command of the project behind one console script.

  sallm-jax train --config=configs/sqa_grpo.py:smoke --workdir=runs/smoke
  sallm-jax report runs/smoke
  sallm-jax COMMAND --help

The rest of the command line goes unchanged to the command's module, which parses its own flags
(absl for train and compare, argparse for the others): `python -m <module>` runs the same
command. `--help` after a command shows its summary, an example and the module's flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import sys
import textwrap
from collections.abc import Sequence

PROG = "sallm-jax"


@dataclasses.dataclass(frozen=True)
class Command:
    module: str
    summary: str
    example: str
    absl: bool = False  # flags parsed by absl (app.run) rather than argparse (main(argv))
    entry: str = ""  # the module holding `main`, when not `module` (a package's __main__)

    def load(self):
        return importlib.import_module(self.entry or self.module)


IMPORTERS = {
    "librisqa": ("LibriSQA Part I + LibriSpeech flac -> spoken-QA manifests",
                 "--input LibriSQA-PartI --audio_root LibriSpeech --output data/librisqa"),
    "covost2": ("CoVoST 2 TSVs + Common Voice clips -> speech-translation manifests",
                "--input covost_tsv --audio_root cv/en/clips --output data/covost2_en_de"),
    "avqa": ("AVQA (R1-AQA's JSONL) + wav files -> multiple-choice audio-QA manifests",
             "--input avqa.jsonl --audio_root avqa_wavs --output data/avqa"),
    "mmau": ("MMAU test-mini JSON + wav files -> a multiple-choice test manifest",
             "--input mmau-test-mini.json --output data/mmau"),
    "librispeech": ("a prepared TFDS librispeech directory -> 16 kHz wav files + ASR manifests",
                    "--data_dir TFDS_DIR --output data/librispeech"),
}

COMMANDS = {
    "train": Command(
        "sallm_jax.main",
        "run a config's stages (base, warm start, SFT, GRPO, evaluation) in a work directory, "
        "resuming where it stopped; writes results.json, report.md and plots/",
        "--config=configs/sqa_grpo.py:smoke --workdir=runs/smoke --config.grpo.beta=0.04",
        absl=True),
    "compare": Command(
        "sallm_jax.commands.grpo_vs_sft",
        "GRPO against SFT from the same start and budget over seeds, each arm's learning rate "
        "chosen on validation; writes table.md and table.json",
        "--config=configs/sqa_grpo.py --seeds=0,1,2 --workdir=runs/gvs_sqa", absl=True),
    "parity": Command(
        "sallm_jax.commands.parity",
        "largest logit difference between sallm_jax and transformers on a checkpoint "
        "(needs PyTorch); exits 1 above the tolerance",
        "--checkpoint path/to/Qwen2-Audio-7B-Instruct --tolerance 1e-4"),
    "plan-memory": Command(
        "sallm_jax.commands.plan_memory",
        "per-device memory of GRPO training on a mesh, from shapes alone",
        "--preset qwen2_audio_7b --mesh data=1,fsdp=4,tensor=1 --device h100"),
    "build-base": Command(
        "sallm_jax.commands.build_base",
        "build a config's base model (its base stage alone) and write it as a shipped base: "
        "a Hugging Face checkpoint with its settings, build log and held-out WER",
        "--config=configs/sqa_grpo.py --out=sallm_jax/bases", absl=True),
    "random-checkpoint": Command(
        "sallm_jax.commands.random_checkpoint",
        "a complete random-weight checkpoint at a published config (weights, tokenizer, chat "
        "template, processor and generation files), for trying a run at that size",
        "--preset granite_speech_2b --dtype bfloat16 --out ckpt/granite_2b_random"),
    "report": Command(
        "sallm_jax.report",
        "plots of every training scalar and report.md (results, sample groups, config diff, "
        "timings, skipped inputs) for one or several work directories",
        "runs/smoke", entry="sallm_jax.report.__main__"),
    **{f"import-{name}": Command(f"sallm_jax.data.importers.{name}", summary, example)
       for name, (summary, example) in IMPORTERS.items()},
}


def overview() -> str:
    """The top-level help: every command and its summary."""
    width = max(map(len, COMMANDS)) + 2
    lines = [f"usage: {PROG} COMMAND [FLAGS]   ({PROG} COMMAND --help for one command)", "",
             "Post-train speech-aware LLMs with GRPO and SFT.", "", "commands:"]
    for name, c in COMMANDS.items():
        wrapped = textwrap.wrap(c.summary, 98 - width)
        lines += [f"  {name:<{width}}{wrapped[0]}", *(" " * (width + 2) + w for w in wrapped[1:])]
    lines += ["", "example:", f"  {PROG} train {COMMANDS['train'].example}"]
    return "\n".join(lines)


@contextlib.contextmanager
def program_name(name: str):
    """Within it, sys.argv[0] (argparse's program name in usage lines) is `sallm-jax name`."""
    saved = sys.argv[0] if sys.argv else ""
    sys.argv[:1] = [f"{PROG} {name}"]
    try:
        yield
    finally:
        sys.argv[:1] = [saved]


def module_flags(name: str, command: Command) -> str:
    """The flags the command's module takes, as its own help lists them."""
    module = command.load()
    if command.absl:
        from absl import flags

        return flags.FLAGS.module_help(module)
    out = io.StringIO()
    with (program_name(name), contextlib.redirect_stdout(out),
          contextlib.suppress(SystemExit)):
        module.main(["--help"])
    return out.getvalue()


def command_help(name: str) -> str:
    command = COMMANDS[name]
    text = [*textwrap.wrap(f"{PROG} {name}: {command.summary}.", 100), "", "example:",
            f"  {PROG} {name} {command.example}", "",
            f"The same as `python -m {command.module}`, whose flags follow.", ""]
    if command.absl:
        text += ["Any config key can be overridden: --config.<section>.<key>=value.", ""]
    return "\n".join(text) + module_flags(name, command)


def run(name: str, args: Sequence[str]) -> int:
    """Run command `name` with `args`; its exit status."""
    command = COMMANDS[name]
    module = command.load()
    if command.absl:
        from absl import flags

        from sallm_jax.runtime.user_errors import run_command

        flags.mark_flags_as_required(["config"])
        try:
            run_command(module.main, argv=[f"{PROG} {name}", *args])
        except SystemExit as stop:  # app.run ends with sys.exit
            return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        return 0
    with program_name(name):
        status = module.main(list(args))
    return status if isinstance(status, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: `sallm-jax COMMAND [FLAGS]`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{PROG}: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if rest[:1] in (["-h"], ["--help"]):
        print(command_help(name))
        return 0
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main())
