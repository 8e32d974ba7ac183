"""The user turn and the reference completion of each speech task.

A manifest row becomes one user turn (`user_text`), which the model's chat format wraps in its
chat template with the row's clip (`sallm_jax.data.chat_format`), and one reference completion
(`target_text`):

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
    """The text of the user turn for `row` (see the module docstring for each task).

    For "aqa" this is R1-AQA's prompt text verbatim, the options rendered as a Python list
    (`str(list)`, quotes and all), because that is what their checkpoints were trained on.
    """
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
