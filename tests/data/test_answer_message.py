"""An empty or whitespace answer is named with its value, in the error and in skipped.jsonl
(the message once printed its own format placeholder)."""

from __future__ import annotations

import json

import pytest

from sallm_jax.data.bad_input import SkipLog
from sallm_jax.data.manifest import ManifestError, read_manifest


def write(tmp_path, answer):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "r0", "audio": "a.wav", "task": "sqa", "question": "Who?",
                                "answer": answer}) + "\n")
    return path


@pytest.mark.parametrize("answer", ["", " \t "])
def test_the_error_shows_the_answer(tmp_path, answer):
    with pytest.raises(ManifestError) as caught:
        read_manifest(write(tmp_path, answer))
    assert str(caught.value) == (
        f"{tmp_path / 'm.jsonl'}:1: field 'answer': expected a non-empty string (an empty "
        f"reference can never earn a reward), got {answer!r}")


def test_skipped_jsonl_shows_the_answer(tmp_path):
    log = SkipLog("skip", tmp_path / "skipped.jsonl")
    assert read_manifest(write(tmp_path, "   "), skip_log=log) == []
    (record,) = [json.loads(x) for x in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert record["detail"].endswith("got '   '")
