"""The bad-input policy: stop with a precise error, or skip the example with a record.

"error" (default) raises at the first bad example, naming the manifest line or audio file;
"skip" leaves it out, counts it by reason, logs it, and appends {"id", "source", "reason",
"detail"} to `<workdir>/skipped.jsonl`.
"""

from __future__ import annotations

import collections
import json
import logging
import pathlib
import threading
from typing import NamedTuple

from sallm_jax.runtime.long_text import shorten
from sallm_jax.runtime.record_files import mend_jsonl
from sallm_jax.runtime.user_errors import UserError

POLICIES = ("error", "skip")


class Skip(NamedTuple):
    """One example that cannot be used, as found by an input worker (picklable)."""

    example_id: str
    source: str
    reason: str
    detail: str


class BadInputError(UserError, ValueError):
    """An example that cannot be used under "error" (one line, exit status 2: `user_errors`)."""


class SkipLog:
    """Applies the bad-input policy and keeps the record of skipped examples (thread-safe)."""

    def __init__(self, policy: str, path: pathlib.Path | None = None):
        if policy not in POLICIES:
            raise ValueError(f"data.on_bad_input: expected one of {POLICIES}, got {policy!r}")
        self.policy, self.path = policy, path
        if path is not None:
            mend_jsonl(path)  # a record a kill cut short would swallow the next one
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: set[tuple[str, str]] = set()  # (example id, source) already recorded
        self._lock = threading.Lock()

    def handle(self, example_id: str, source: str, reason: str, detail: str) -> None:
        """Raise (policy "error") or record the skip once per example; a long `detail` is cut."""
        detail = shorten(detail)
        if self.policy == "error":
            raise BadInputError(f"{source}: {reason}: {detail} (example {example_id!r}; set "
                                f"data.on_bad_input=skip to leave such examples out)")
        with self._lock:
            if (example_id, source) in self.seen:  # met again in a later epoch
                return
            self.counts[reason] += 1
            self.seen.add((example_id, source))
            logging.warning("skipping example %r (%s): %s: %s", example_id, source, reason, detail)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"id": example_id, "source": source, "reason": reason,
                                        "detail": detail}) + "\n")

    def skipped(self, example_id: str) -> bool:
        """Whether the example with this id was left out (for any reason)."""
        return any(seen_id == example_id for seen_id, _ in self.seen)

    def absorb(self, loaded: tuple[dict, tuple[Skip, ...]]) -> dict:
        """The batch of a worker's (batch, skips), after the policy has handled the skips."""
        batch, skips = loaded
        for skip in skips:
            self.handle(*skip)
        return batch

    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        return f"{total} examples skipped" + (f" ({parts})" if parts else "")
