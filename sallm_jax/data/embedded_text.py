"""Text of every embedded set's kind, drawn from their generators without synthesising audio.

Tokenizer training text only (beside the base corpus's transcripts); no model trains on it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from sallm_jax.data import embedded_asr, embedded_ast
from sallm_jax.data.embedded_aqa import sample_item
from sallm_jax.data.embedded_sqa import TEMPLATES
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.prompts import target_text, user_text

FORMAT_VERSION = 1


def embedded_texts(seed: int, draws: int) -> Iterator[str]:
    """`draws` seeded passages of each set's kind with questions, answers, translations, prompts."""
    rng = random.Random(seed)
    yield from (embedded_asr.INSTRUCTION, embedded_ast.INSTRUCTION)
    for _ in range(draws):
        passage = rng.choice(TEMPLATES)(rng)
        yield passage.text
        for qa in passage.questions:
            yield qa.question
            yield from qa.answers
        translation = embedded_ast.sample_translation(rng)
        # The usual word order: the other rendering holds the same words.
        yield from (translation.english, translation.renderings[0])
        _, _, _, item = sample_item(rng)
        row = ManifestRow(id="text", audio="", task="aqa", question=item.question,
                          answer=item.choices[item.answer_index], choices=list(item.choices),
                          answer_index=item.answer_index)
        yield from (user_text(row), target_text(row))
