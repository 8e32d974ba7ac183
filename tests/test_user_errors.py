"""A user's mistake (a config value, an unknown config key, a flag absl cannot parse, a reward
that does not resolve, a mesh that does not fit the devices, a missing manifest) prints exactly
one line on stderr naming the key or file and exits 2, before any data or model is built;
--debug or SALLM_JAX_DEBUG=1 shows the traceback; any other error keeps its traceback and exits
1."""

import os
import subprocess
import sys

import pytest
from absl import app

from sallm_jax.runtime import user_errors
from sallm_jax.runtime.user_errors import (
    ConfigError,
    one_line,
    reporting_user_errors,
    unknown_override,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MAIN, CONSOLE_SCRIPT = ["sallm_jax.main"], ["sallm_jax.cli", "train"]


def train(*args, workdir, env=None, command=MAIN):
    """`python -m COMMAND --config=sqa_grpo:smoke --workdir=WORKDIR ARGS`: (exit status, stderr
    lines)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    out = subprocess.run([sys.executable, "-m", *command, "--config=sqa_grpo:smoke",
                          f"--workdir={workdir}", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    return out.returncode, out.stderr.splitlines()


@pytest.mark.parametrize("args, line", [
    (["--config.grpo.group_size=0"], "error: grpo.group_size: expected an integer >= 2"),
    (["--config.grpo.top_p=1.5"], "error: grpo.top_p: expected a value in (0, 1], got 1.5"),
    (["--config.model.dtype=float16x"],
     "error: model.dtype: expected float32 or bfloat16, got 'float16x'"),
    (["--config.grpo.betta=1"],
     'error: --config.grpo.betta: no such config key; did you mean "beta" instead of "betta"?'),
    (["--config.grpo.group_size=abc"], "error: flag --config.grpo.group_size=abc: invalid literal"),
    (["--config.grpo.reward_fns=('blue',)"], "error: grpo.reward_fns: unknown reward(s) ['blue']"),
    (["--config.grpo.reward_fns=('no_such_module:score',)"],
     "error: grpo.reward_fns: cannot import module 'no_such_module'"),
    (["--config.rl.beta=0.1"], "error: --config.rl.beta: no such config key; the rl section is "
                               "now grpo: --config.grpo.beta"),
    (["--config.parallel.mesh.data=3"], "error: parallel.mesh: {'data': 3, 'fsdp': 1, "
                                        "'tensor': 1} uses 3 devices, but 1 are present"),
    (["--config.data.name=manifest", "--config.data.train_manifest=no/train.jsonl",
      "--config.data.test_manifest=no/test.jsonl"],
     "error: data.train_manifest: expected a manifest file (none in"),
])
def test_a_user_error_is_one_line_and_exit_2(args, line, tmp_path):
    status, stderr = train(*args, workdir=tmp_path / "run")
    assert status == 2 and len(stderr) == 1, stderr
    assert stderr[0].startswith(line), stderr


def test_the_console_script_reports_alike(tmp_path):
    status, stderr = train("--config.grpo.betta=1", workdir=tmp_path / "run",
                           command=CONSOLE_SCRIPT)
    assert status == 2 and stderr == [
        'error: --config.grpo.betta: no such config key; did you mean "beta" instead of "betta"?']


CONFIG_ERROR = "sallm_jax.runtime.user_errors.ConfigError: grpo.group_size: expected"


@pytest.mark.parametrize("args, env, last", [
    (["--config.grpo.group_size=0", "--debug"], {}, CONFIG_ERROR),
    (["--config.grpo.group_size=0"], {"SALLM_JAX_DEBUG": "1"}, CONFIG_ERROR),
    (["--config.grpo.betta=1", "--debug"], {}, "AttributeError: "),  # met while parsing flags
])
def test_debug_shows_the_traceback(args, env, last, tmp_path):
    status, stderr = train(*args, workdir=tmp_path / "run", env=env)
    assert status == 2 and stderr[0] == "Traceback (most recent call last):", stderr
    assert stderr[-1].startswith(last), stderr


def test_an_internal_error_propagates_with_its_traceback():
    def main(argv):
        raise KeyError("bleu")

    with pytest.raises(KeyError, match="bleu"):
        reporting_user_errors(main, ["train"])


def test_user_errors_exit_2_with_their_line(capsys, monkeypatch):
    monkeypatch.delenv("SALLM_JAX_DEBUG", raising=False)
    for error in (ConfigError("grpo.beta: expected a value >= 0, got -1"),
                  app.UsageError("grpo.beta: expected a value >= 0, got -1")):
        def main(argv, error=error):
            raise error

        with pytest.raises(SystemExit) as stop:
            reporting_user_errors(main, ["train"])
        assert stop.value.code == user_errors.EXIT_USER_ERROR == 2
        assert capsys.readouterr().err == "error: grpo.beta: expected a value >= 0, got -1\n"


def test_one_line_keeps_a_quoted_traceback_s_exception():
    message = ("flag --config=x:y: Error whilst parsing config file:\n\n  Traceback (most recent "
               "call last):\n    File \"x.py\", line 3\n  ValueError: unknown preset 'y'\n")
    assert one_line(message) == ("flag --config=x:y: Error whilst parsing config file: "
                                 "ValueError: unknown preset 'y'")
    assert one_line("a\n  b\n") == "a b"


def test_unknown_override_names_the_flag_and_the_near_key():
    error = AttributeError(KeyError("'betta'\nDid you mean \"beta\" instead of \"betta\"?"))
    argv = ["train", "--config=sqa_grpo", "--config.grpo.beta=1", "--config.grpo.betta=2"]
    assert unknown_override(error, argv) == ('--config.grpo.betta: no such config key; did you '
                                             'mean "beta" instead of "betta"?')
    assert unknown_override(KeyError("'zzz'"), ["train", "--config.zzz.a=1"]) == (
        "--config.zzz.a: no such config key")


def test_the_renamed_rl_section_is_named_by_its_new_name():
    """`rl` is now `grpo`: an override of it, or a config file reading it, says so."""
    assert unknown_override(KeyError("'rl'"), ["train", "--config.rl.beta=1"]) == (
        "--config.rl.beta: no such config key; the rl section is now grpo: --config.grpo.beta")
    assert unknown_override(AttributeError(KeyError("'rl'")), ["train"]).startswith(
        "rl: this section is now grpo")


def test_a_checkpoint_that_does_not_resolve_is_one_line(tmp_path):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text('{"id": "r0", "audio": "0.wav", "task": "sqa", "question": "Where?", '
                        '"answer": "Home."}\n')
    status, stderr = train("--config.data.name=manifest",
                           f"--config.data.train_manifest={manifest}",
                           f"--config.data.test_manifest={manifest}",
                           "--config.stages=('sft', 'eval')", "--config.sft.start=init",
                           f"--config.model.checkpoint={tmp_path / 'none'}",
                           workdir=tmp_path / "run")
    assert status == 2 and stderr == [
        f"error: model.checkpoint='{tmp_path / 'none'}': no such directory, and not a Hub id "
        "(org/name[@revision])"]
