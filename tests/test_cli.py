"""`sallm-jax`: the overview, each command's help (what it does, an example, the module's own
flags), and dispatch to the modules with the rest of the command line unchanged."""

import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from sallm_jax import cli
from sallm_jax.commands import plan_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGPARSE_FLAGS = {"parity": "--checkpoint", "plan-memory": "--mesh", "report": "--preset",
                  "random-checkpoint": "--encoder_layers",
                  "import-librisqa": "--audio_root", "import-covost2": "--audio_root",
                  "import-avqa": "--validation_fraction", "import-mmau": "--input",
                  "import-librispeech": "--data_dir"}


def run_cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "sallm_jax.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


def test_the_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    module, function = scripts["sallm-jax"].split(":")
    assert getattr(importlib.import_module(module), function) is cli.main


def test_overview_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    expected = ["train", "compare", "parity", "plan-memory", "build-base", "random-checkpoint",
                "report",
                "import-librisqa",
                "import-covost2", "import-avqa", "import-mmau", "import-librispeech"]
    assert [line.split()[0] for line in out.split("commands:\n")[1].splitlines()
            if line.startswith("  ") and not line.startswith("   ")][:len(expected)] == expected
    assert max(map(len, out.splitlines())) <= 100


@pytest.mark.parametrize("name", sorted(ARGPARSE_FLAGS))
def test_argparse_command_help(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    command = cli.COMMANDS[name]
    assert out.startswith(f"sallm-jax {name}: ")
    assert f"example:\n  sallm-jax {name} {command.example}\n" in out
    assert f"python -m {command.module}" in out
    assert ARGPARSE_FLAGS[name] in out  # the module's own flag list follows


def test_absl_commands_help_and_dispatch():
    train = run_cli("train", "--help")
    assert train.returncode == 0, train.stderr
    assert "sallm-jax train --config=configs/sqa_grpo.py:smoke" in train.stdout
    assert "--config:" in train.stdout and "--workdir:" in train.stdout
    compare = run_cli("compare", "--help")
    assert compare.returncode == 0 and "--seeds:" in compare.stdout and "--arms:" in compare.stdout
    # The rest of the line reaches the module's flags: --config is required, --arms checked;
    # each mistake is one line and exit status 2 (sallm_jax.runtime.user_errors).
    missing = run_cli("train")
    assert missing.returncode == 2 and missing.stderr.splitlines() == [
        "error: flag --config=None: Flag --config must have a value other than None."]
    wrong = run_cli("compare", "--config=configs/sqa_grpo.py:smoke", "--arms=sft,nope")
    assert wrong.returncode == 2 and wrong.stderr.splitlines() == [
        "error: --arms: unknown ['nope']; expected some of ['sft', 'grpo', 'mp_grpo', "
        "'grpo_base']"]


def test_dispatch_forwards_the_arguments(capsys, tmp_path):
    args = ["--preset", "qwen2_audio_7b", "--mesh", "data=1,fsdp=4,tensor=1", "--device", "h100"]
    expected = plan_memory.main(args)
    capsys.readouterr()
    assert cli.main(["plan-memory", *args]) == 0
    assert capsys.readouterr().out.strip() == expected.strip()
    with pytest.raises(SystemExit) as stop:  # argparse's own error, under this command's name
        cli.main(["report"])
    assert stop.value.code == 2
    assert "usage: sallm-jax report" in capsys.readouterr().err
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
