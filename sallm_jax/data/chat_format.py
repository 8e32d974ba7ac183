"""Prompt and target ids as a checkpoint's own processor makes them.

A prompt is the user turn (`prompts.user_text`) with one clip, rendered by the tokenizer's chat
template with the generation prompt and the template's default system turn, its audio
placeholder expanded to one copy per audio embedding (as transformers' `Qwen2AudioProcessor` and
`GraniteSpeechProcessor` do). A target is the answer's ids, then the token that closes an
assistant turn (`<|im_end|>` in ChatML, `<|end_of_text|>` in Granite's). A tokenizer that would
not carry the audio raises `ChatFormatError` (`chat_format`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

# Stands for the answer while the template renders a finished conversation, to find what the
# template writes after an assistant turn.
_ANSWER_MARK = "\x00answer\x00"


class ChatFormatError(ValueError):
    """A tokenizer or prompt that would not give the model its audio as its processor does."""


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    """How rows become prompt and target ids for one model and tokenizer (`chat_format`).

    Attributes:
      tokenizer: the checkpoint's (or the project's) tokenizer, with its chat template.
      audio_token: the family's placeholder (`ModelFamily.audio_token`).
      audio_token_id: the model's audio token (config.audio_token_id), the placeholder's id.
      user_content: the family's text -> user-turn content (`ModelFamily.user_content`).
      turn_end_id: the token the template writes after an assistant turn's text.
      stop_ids: the ids that end a generated answer.
      system_prompt: a system turn of one's own, or None for the template's default.
    """

    tokenizer: object
    audio_token: str
    audio_token_id: int
    user_content: Callable[[str], object]
    turn_end_id: int
    stop_ids: tuple[int, ...]
    system_prompt: str | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def messages(self, text: str) -> list[dict]:
        """The conversation of one user turn with one clip, after the system turn if set."""
        system = ([{"role": "system", "content": self.system_prompt}]
                  if self.system_prompt is not None else [])
        return system + [{"role": "user", "content": self.user_content(text)}]

    def render(self, text: str, num_audio_tokens: int) -> str:
        """`messages(text)` rendered with the generation prompt, its placeholder repeated
        `num_audio_tokens` (>= 1) times; ChatFormatError unless it holds exactly one."""
        if num_audio_tokens < 1:
            raise ValueError(f"num_audio_tokens must be >= 1, got {num_audio_tokens}")
        rendered = self.tokenizer.apply_chat_template(self.messages(text), tokenize=False,
                                                      add_generation_prompt=True)
        if (found := rendered.count(self.audio_token)) != 1:
            raise ChatFormatError(
                f"the chat template and the user text hold {found} audio placeholders "
                f"{self.audio_token!r}; a prompt with one clip needs exactly one")
        return rendered.replace(self.audio_token, self.audio_token * num_audio_tokens)

    def prompt_ids(self, text: str, num_audio_tokens: int) -> list[int]:
        """The prompt's ids, tokenised as the processor tokenises its expanded text."""
        return self.tokenizer(self.render(text, num_audio_tokens))["input_ids"]

    def target_ids(self, text: str) -> list[int]:
        """The answer's ids, then the token that closes an assistant turn."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.turn_end_id]


def _source(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _turn_end_id(tokenizer, user_content: Callable[[str], object]) -> int:
    """The first token the template writes after an assistant turn; ChatFormatError unless it
    is a special token."""
    conversation = [{"role": "user", "content": user_content("question")},
                    {"role": "assistant", "content": _ANSWER_MARK}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    after = rendered.split(_ANSWER_MARK, 1)[1] if _ANSWER_MARK in rendered else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    if not ids or ids[0] not in tokenizer.all_special_ids:
        raise ChatFormatError(
            f"{_source(tokenizer)}: the chat template writes {after[:40]!r} after an assistant "
            "turn, which does not start with a special token to end answers with")
    return ids[0]


def chat_format(tokenizer, family, audio_token_id: int, *, system_prompt: str | None = None,
                eos_token_ids: Sequence[int] = ()) -> ChatFormat:
    """The prompt format of `family`'s processor over `tokenizer`.

    Args:
      tokenizer: a transformers tokenizer with a chat template.
      family: the model's `ModelFamily` (its placeholder and user-turn layout).
      audio_token_id: config.audio_token_id of the model.
      system_prompt: a system turn of one's own (None: the template's default).
      eos_token_ids: generation_config.json's eos ids; generation stops on them and on the
        turn's closing token. Empty (no generation config): the tokenizer's eos and pad
        tokens and the closing token.

    Raises:
      ChatFormatError naming the tokenizer when it has no chat template, when its placeholder
      does not encode as the single id `audio_token_id`, or when the template's turn end is
      not a special token.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatFormatError(f"{_source(tokenizer)}: the tokenizer has no chat template "
                              "(chat_template.jinja or tokenizer_config.json)")
    placeholder = family.audio_token
    ids = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
    if ids != [audio_token_id]:
        raise ChatFormatError(
            f"{_source(tokenizer)}: the tokenizer encodes the audio placeholder {placeholder!r} "
            f"as {len(ids)} ids {ids[:10]}, not as the model's audio token "
            f"(audio_token_id={audio_token_id}): the model would never hear its audio")
    turn_end = _turn_end_id(tokenizer, family.user_content)
    ends = tuple(eos_token_ids) or (tokenizer.eos_token_id, tokenizer.pad_token_id)
    stop_ids = tuple(dict.fromkeys(i for i in (*ends, turn_end) if i is not None))
    return ChatFormat(tokenizer=tokenizer, audio_token=placeholder,
                      audio_token_id=audio_token_id, user_content=family.user_content,
                      turn_end_id=turn_end, stop_ids=stop_ids, system_prompt=system_prompt)
