"""The user turn (`user_text`) and the reference completion (`target_text`) of each task.

  task  user text                                             target
  sqa   the question                                          the answer
  ast   the instruction ("Translate the English speech ...")  the translation
  aqa   R1-AQA's question + options + answer-tag instruction  <answer>{correct choice}</answer>
  asr   the instruction ("Transcribe the audio.")             the transcript
"""

from __future__ import annotations

from sallm_jax.data.manifest import ManifestRow

TASKS = ("sqa", "ast", "aqa", "asr")


def _checked_choices(row: ManifestRow) -> tuple[list[str], int]:
    """(choices, answer_index) of a multiple-choice row; the error names the row and field."""
    if not row.choices:
        raise ValueError(f"example {row.id!r}: task 'aqa' needs a non-empty 'choices' list")
    if row.answer_index is None or not 0 <= row.answer_index < len(row.choices):
        raise ValueError(
            f"example {row.id!r}: 'answer_index' must index its {len(row.choices)} choices, "
            f"got {row.answer_index!r}"
        )
    return row.choices, row.answer_index


def _unknown_task(row: ManifestRow) -> ValueError:
    return ValueError(f"example {row.id!r}: task {row.task!r}: expected one of {list(TASKS)}")


def user_text(row: ManifestRow) -> str:
    """User-turn text of `row`; for "aqa", R1-AQA's prompt verbatim (options as `str(list)`)."""
    if row.task in ("sqa", "ast", "asr"):
        return row.question
    if row.task == "aqa":
        choices, _ = _checked_choices(row)
        return (
            f"{row.question} Please choose the answer from the following options: {choices}. "
            "Output the final answer in <answer> </answer>."
        )
    raise _unknown_task(row)


def target_text(row: ManifestRow) -> str:
    """The reference completion for `row`, without the end token."""
    if row.task in ("sqa", "ast", "asr"):
        return row.answer
    if row.task == "aqa":
        choices, index = _checked_choices(row)
        return f"<answer>{choices[index]}</answer>"
    raise _unknown_task(row)
