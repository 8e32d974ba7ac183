"""User-turn and target strings per task, compared with formats written out by hand."""

import pytest

from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.prompts import target_text, user_text


def _row(task: str, **fields) -> ManifestRow:
    return ManifestRow(id="row-7", audio="a.wav", task=task, **fields)


SQA = _row("sqa", question="Where did Maria take the apples?",
           answer="Maria took the apples to the library.")
AST = _row("ast", question="Translate the English speech into German.",
           answer="Maria nahm sieben Äpfel mit.", source_lang="en", target_lang="de")
AQA = _row("aqa", question="Where did Ravi take the books?", answer="bakery",
           choices=["office", "bakery", "library", "Lucy's hospital"], answer_index=1)


def test_user_text_per_task():
    assert user_text(SQA) == "Where did Maria take the apples?"
    assert user_text(AST) == "Translate the English speech into German."
    # R1-AQA: the options as Python prints a list (an apostrophe switches to double quotes).
    assert user_text(AQA) == (
        "Where did Ravi take the books? Please choose the answer from the following options: "
        "['office', 'bakery', 'library', \"Lucy's hospital\"]. "
        "Output the final answer in <answer> </answer>."
    )


def test_transcription_rows_are_instruction_and_transcript():
    row = _row("asr", question="Transcribe the audio.", answer="Maria took seven apples.")
    assert user_text(row) == "Transcribe the audio."
    assert target_text(row) == "Maria took seven apples."


def test_target_text_per_task():
    assert target_text(SQA) == "Maria took the apples to the library."
    assert target_text(AST) == "Maria nahm sieben Äpfel mit."
    assert target_text(AQA) == "<answer>bakery</answer>"


@pytest.mark.parametrize("function", [user_text, target_text])
def test_errors_name_the_row(function):
    with pytest.raises(ValueError, match=r"'row-7'.*'diarization'.*expected one of"):
        function(_row("diarization", question="q", answer="a"))
    with pytest.raises(ValueError, match=r"'row-7'.*choices"):
        function(_row("aqa", question="q", answer="a"))
    with pytest.raises(ValueError, match=r"'row-7'.*answer_index.*got 4"):
        function(_row("aqa", question="q", answer="a", choices=["a", "b"], answer_index=4))
