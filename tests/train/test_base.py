"""The base model's cache key (every setting that decides the base changes it, bookkeeping does
not) and its tokenizer (every task's text fits the presets' limits)."""

import pathlib
import random

from sallm_jax.configs.aqa_grpo import get_config as get_aqa_config
from sallm_jax.configs.ast_grpo import get_config as get_ast_config
from sallm_jax.configs.sqa_grpo import get_config
from sallm_jax.data import embedded_aqa, embedded_asr, embedded_ast, embedded_sqa
from sallm_jax.data.manifest import ManifestRow
from sallm_jax.data.pipeline import prompt_text_tokens
from sallm_jax.data.prompts import target_text
from sallm_jax.train.base import base_directory, base_tokenizer
from tests.batch_spec import qwen2_audio_chat

CACHE = pathlib.Path("/cache")


def test_deciding_settings_change_the_key():
    reference = base_directory(get_config("tiny"), CACHE)
    assert reference.parent == CACHE / "base"
    changes = {
        "model.text.hidden_size": 96, "model.audio.encoder_layers": 3, "model.dtype": "bfloat16",
        "tokenizer.vocab_size": 512, "base.steps": 601, "base.learning_rate": 1e-3,
        "base.num_train": 3999, "base.seed": 1, "base.ctc_weight": 0.0,
        "base.max_target_tokens": 30,
    }
    keys = set()
    for path, value in changes.items():
        cfg = get_config("tiny")
        section, _, name = path.rpartition(".")
        node = cfg
        for part in section.split("."):
            node = node[part]
        node[name] = value
        keys.add(base_directory(cfg, CACHE))
    assert reference not in keys and len(keys) == len(changes)


def test_bookkeeping_and_task_settings_keep_the_key():
    reference = base_directory(get_config("tiny"), CACHE)
    cfg = get_config("tiny")
    cfg.base.log_every, cfg.base.checkpoint_every = 7, 33
    cfg.seed, cfg.grpo.learning_rate, cfg.sft.steps = 5, 1e-5, 3  # the arms, not the base
    cfg.data.name = "embedded_ast"
    assert base_directory(cfg, CACHE) == reference


def test_base_tokenizer_fits_every_task_preset(tmp_path):
    """The base's tokenizer learns the tasks' kinds of text too, so every tiny preset's prompts
    and targets fit its token limits (targets with their end token). Prompts are counted as the
    input pipeline's length screen counts them: the whole chat prompt, audio placeholders
    aside."""
    rng = random.Random(7)
    corpus = [ManifestRow(id=str(i), audio="", task="asr", question=embedded_asr.INSTRUCTION,
                          answer=text, meta={"passage": text})
              for i, text in enumerate(embedded_asr.sample_text(rng) for _ in range(200))]
    tok = base_tokenizer(tmp_path, corpus, vocab_size=1024)
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    chat = qwen2_audio_chat(tok)
    count = lambda text: len(tok(text)["input_ids"])  # noqa: E731
    sqa, ast, aqa = (get_config("tiny"), get_ast_config("tiny"), get_aqa_config("tiny"))
    for _ in range(300):
        for qa in embedded_sqa.sample_passage(rng).questions:
            row = ManifestRow(id="q", audio="", task="sqa", question=qa.question,
                              answer=qa.answers[0])
            assert prompt_text_tokens(row, chat) <= sqa.data.max_prompt_text_tokens
            assert count(qa.answers[0]) + 1 <= sqa.sft.max_target_tokens
        assert count(embedded_ast.sample_translation(rng).german) + 1 <= ast.sft.max_target_tokens
        _, _, _, item = embedded_aqa.sample_item(rng)
        row = ManifestRow(id="q", audio="", task="aqa", question=item.question,
                          answer=item.choices[item.answer_index], choices=list(item.choices),
                          answer_index=item.answer_index)
        assert prompt_text_tokens(row, chat) <= aqa.data.max_prompt_text_tokens
        assert count(target_text(row)) + 1 <= aqa.sft.max_target_tokens
