"""Prompt and target strings for the speech tasks, in the Qwen2-Audio chat format.

A manifest row becomes one user turn (`user_text`) wrapped in the chat template with its audio
(`chat_prompt`), and one reference completion (`target_text`):

  task  user text                                             target
  sqa   the question                                          the answer
  ast   the instruction ("Translate the English speech ...")  the translation
  aqa   R1-AQA's question + options + answer-tag instruction  <answer>{correct choice}</answer>
  asr   the instruction ("Transcribe the audio.")             the transcript
"""

from __future__ import annotations

from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.tokenizer import AUDIO_TOKEN, SYSTEM_PROMPT

TASKS = ("sqa", "ast", "aqa", "asr")


def chat_prompt(text: str, num_audio_tokens: int) -> str:
    """Chat-formatted prompt: one audio clip, then `text`, with `<|AUDIO|>` expanded.

    Qwen2-Audio's processor expands the single placeholder of the chat template to one token per
    audio embedding before tokenising; the model then scatters the clip's embeddings into those
    positions. Use
    `sallm_jax.models.qwen2_audio.config.audio_token_count(num_feature_frames(samples))` for the
    count. Renders the same string as the tokenizer's chat template for
    [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": text}]}]
    with add_generation_prompt=True, before expansion.
    """
    if num_audio_tokens < 1:
        raise ValueError(f"chat_prompt: num_audio_tokens must be >= 1, got {num_audio_tokens}")
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\nAudio 1: <|audio_bos|>{AUDIO_TOKEN * num_audio_tokens}<|audio_eos|>\n"
        f"{text}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def sqa_prompt(question: str, num_audio_tokens: int) -> str:
    """The spoken-QA prompt: `chat_prompt` with the question as the user text."""
    return chat_prompt(question, num_audio_tokens)


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
