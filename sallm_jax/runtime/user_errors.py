"""Errors a user can fix: the absl commands (train, compare) print one line naming the key or file
and exit `EXIT_USER_ERROR` (`--debug` or SALLM_JAX_DEBUG=1: the traceback); other errors exit 1."""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags

EXIT_USER_ERROR = 2  # the one line names the key or file to fix

_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a config or data error "
                           "(also SALLM_JAX_DEBUG=1); without it the error is one line.")


class UserError(Exception):
    """An error whose message alone tells the user what to fix (a config key, a file)."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message starts with the key."""


# Config sections renamed since a release: old name -> new. A config or an override still using
# the old name is told the new one.
RENAMED_SECTIONS = {"rl": "grpo"}


def require(ok: bool, key: str, expected: str, value) -> None:
    """Raise ConfigError "`key`: expected `expected`, got `value`" unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def renamed_section_error(old: str) -> ConfigError:
    """The error for a config that still has section `old` (a key of `RENAMED_SECTIONS`)."""
    new = RENAMED_SECTIONS[old]
    return ConfigError(f"{old}: this section is now {new}, the name of its stage; write "
                       f"{new}.<key> (--config.{new}.<key>) for {old}.<key>")


def show_traceback(argv: Sequence[str]) -> bool:
    """Whether tracebacks were asked for: SALLM_JAX_DEBUG=1, or --debug (parsed, or as typed)."""
    if os.environ.get("SALLM_JAX_DEBUG", "") not in ("", "0"):
        return True
    return _DEBUG.value if flags.FLAGS.is_parsed() else "--debug" in argv


def one_line(message: str) -> str:
    """`message` on one line; a quoted Python traceback is cut to its last line (the exception)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        head = lines[:next(i for i, line in enumerate(lines) if line.startswith("Traceback"))]
        lines = [*head, lines[-1]]
    return " ".join(lines)


def unknown_override(error: LookupError | AttributeError, argv: Sequence[str]) -> str:
    """The line for a `--config.<key>` naming no key: the flag holding ml_collections' missing name,
    with its "Did you mean" hint; a renamed section (`RENAMED_SECTIONS`) is told its new name."""
    inner = error
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    name, _, hint = str(inner.args[0] if inner.args else inner).partition("\n")
    name = name.strip("'\"")
    overrides = [arg.split("=", 1)[0].lstrip("-") for arg in argv
                 if re.match(r"--?config\.", arg)]
    flag = next((o for o in overrides if name in o.split(".")[1:]), None)
    if name in RENAMED_SECTIONS:
        if flag is None:  # the config file itself reads the old section
            return str(renamed_section_error(name))
        new = flag.replace(f".{name}.", f".{RENAMED_SECTIONS[name]}.", 1)
        hint = f"The {name} section is now {RENAMED_SECTIONS[name]}: --{new}"
    flag = flag or f"config.<...>.{name}"
    return f"--{flag}: no such config key" + (f"; {hint[0].lower()}{hint[1:]}" if hint else "")


def stop(line: str, argv: Sequence[str]) -> NoReturn:
    """Report a user error, `line` (the traceback under --debug), and exit EXIT_USER_ERROR."""
    if show_traceback(argv):
        traceback.print_exc()
    else:
        print(f"error: {line}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (an `app.run` flags_parser) with its errors reported by `stop`."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        stop(one_line(str(error)), argv)
    except (LookupError, AttributeError) as error:  # an override of a key the config lacks
        stop(unknown_override(error, argv), argv)


def reporting_user_errors(main: Callable[[list[str]], object], argv: list[str]) -> object:
    """`main(argv)`, a `UserError` or absl `UsageError` reported by `stop`."""
    try:
        return main(argv)
    except (UserError, app.UsageError) as error:
        stop(one_line(str(error)), argv)


def run_command(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """`app.run(main, argv)` with user errors as one line and EXIT_USER_ERROR (`stop`)."""
    app.run(functools.partial(reporting_user_errors, main), argv=argv, flags_parser=parse_flags)
