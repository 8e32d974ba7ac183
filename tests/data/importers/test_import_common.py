"""The importers' shared parts: JSON record iteration, field access, policies, grouped splits."""

import json

import pytest

from sallm_jax.data.importers.common import (
    ImporterError,
    ImportReport,
    InvalidRecord,
    get_field,
    get_string_list,
    iter_json_records,
    split_by_group,
)
from sallm_jax.data.manifest import ManifestRow


def _row(id_, audio):
    return ManifestRow(id=id_, audio=audio, task="sqa", question="q?", answer="a.")


def test_json_array_elements_carry_the_line_they_start_on(tmp_path):
    path = tmp_path / "a.json"
    # indent=2 puts element k's "{" on line 2 + 4k (each element spans 4 lines).
    path.write_text(json.dumps([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}],
                               indent=2))
    report = ImportReport(("train",))
    got = list(iter_json_records(path, report))
    assert [where for where, _ in got] == [f"{path}:2", f"{path}:6", f"{path}:10"]
    assert [record["x"] for _, record in got] == [1, 2, 3]


@pytest.mark.parametrize(("text", "message"), [
    ('[{"x": 1},\n {"x": 2}\n {"x": 3}]', r"a\.json:3: expected ',' or '\]'"),
    ('[{"x": 1},\n {"x": }]', r"a\.json:2: invalid JSON in the array"),
    ('[{"x": 1}', r"a\.json:1: expected ',' or '\]'"),
    ('[{"x": 1}] 7', r"after the closing"),
])
def test_broken_json_array_always_stops(tmp_path, text, message):
    path = tmp_path / "a.json"
    path.write_text(text)
    report = ImportReport(("train",), on_invalid="skip")
    with pytest.raises(ImporterError, match=message):
        list(iter_json_records(path, report))


def test_json_lines_break_at_newlines_only(tmp_path):
    """Separators that str.splitlines also breaks at stay inside their record's strings."""
    records = [{"answer": "one\u2028two\u2029three\x85four\x0cfive"}, {"answer": "six"}]
    path = tmp_path / "a.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\r\n",
                    encoding="utf-8")
    report = ImportReport(("train",))
    got = list(iter_json_records(path, report))
    assert [record for _, record in got] == records
    assert [where for where, _ in got] == [f"{path}:1", f"{path}:2"]


def test_empty_json_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(" [ \n ] \n")
    assert list(iter_json_records(path, ImportReport(("train",)))) == []


def test_json_lines_bad_line_errors_or_is_counted(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1}\n\n{"x": \n{"x": 3}\n')
    with pytest.raises(ImporterError, match=r"a\.jsonl:3: invalid JSON.*--on_invalid=skip"):
        list(iter_json_records(path, ImportReport(("train",))))
    report = ImportReport(("train",), on_invalid="skip")
    got = list(iter_json_records(path, report))
    assert [(where.rsplit(":", 1)[1], record["x"]) for where, record in got] == [("1", 1),
                                                                                  ("4", 3)]
    assert report.skipped == {"invalid record": 1}


def test_get_field_accepts_variants_and_names_the_field():
    record = {"audio path": " a.flac ", "n": True, "k": 3}
    assert get_field(record, ("speech_path", "audio path")) == "a.flac"
    assert get_field(record, ("k",), int) == 3
    assert get_field(record, ("nope",), required=False) is None
    with pytest.raises(InvalidRecord, match=r"field 'speech_path' or 'path': missing"):
        get_field(record, ("speech_path", "path"))
    with pytest.raises(InvalidRecord, match=r"field 'n': expected int, got bool"):
        get_field(record, ("n",), int)
    with pytest.raises(InvalidRecord, match=r"field 'q': expected non-empty string"):
        get_field({"q": "  "}, ("q",))
    with pytest.raises(InvalidRecord, match=r"at least 2 non-empty strings"):
        get_string_list({"c": ["a", 3]}, ("c",))


def test_report_policies_ids_and_summary(tmp_path):
    present = tmp_path / "a.wav"
    present.write_bytes(b"")
    report = ImportReport(("train", "test"), on_missing="skip", on_invalid="skip")
    report.take("train", "in:1", lambda: _row("a", str(present)))
    report.take("train", "in:2", lambda: _row("b", str(tmp_path / "gone.wav")))
    report.take("train", "in:3", lambda: _row("a", str(present)))  # repeated id

    def broken():
        raise InvalidRecord("field 'x': missing")

    report.take("test", "in:4", broken)
    assert [row.id for row in report.rows["train"]] == ["a"]
    assert report.skipped == {"missing audio file": 1, "invalid record": 2}
    written = report.write(tmp_path / "out")
    assert sorted(written) == ["test", "train"]
    assert (tmp_path / "out" / "test.jsonl").read_text() == ""  # every split gets a file
    summary = report.summary()
    assert "train: 1 rows" in summary and "test: 0 rows" in summary
    assert "skipped: 3 (invalid record: 2, missing audio file: 1)" in summary
    assert f"missing audio file {tmp_path / 'gone.wav'} (from in:2)" in summary

    strict = ImportReport(("train",))
    with pytest.raises(ImporterError, match=r"^in:7: audio file not found: .*gone\.wav"):
        strict.take("train", "in:7", lambda: _row("b", str(tmp_path / "gone.wav")))


def test_split_by_group_is_seeded_disjoint_and_order_free():
    items = [(f"w{i}", _row(f"r{i}", f"/clips/{i // 2}.flac")) for i in range(40)]  # 20 clips

    def clip(item):
        return item[1].audio

    kept, held = split_by_group(items, 0.25, seed=3, group=clip)
    assert len({clip(i) for i in held}) == 5 and len(kept) + len(held) == 40
    assert not {clip(i) for i in kept} & {clip(i) for i in held}
    kept_r, held_r = split_by_group(items[::-1], 0.25, seed=3, group=clip)
    assert {clip(i) for i in held_r} == {clip(i) for i in held}
    _, held_other = split_by_group(items, 0.25, seed=4, group=clip)
    assert {clip(i) for i in held_other} != {clip(i) for i in held}
    assert split_by_group(items, 0.0, seed=3, group=clip) == (items, [])
    with pytest.raises(ImporterError, match="validation_fraction"):
        split_by_group(items, 1.0, seed=3, group=clip)
