"""The trained byte-level BPE tokenizer, its special tokens, chat template and the SQA prompt."""

import pathlib

import pytest
import transformers

from sallm_jax.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from sallm_jax.models.qwen2_audio.config import audio_token_count
from tests.batch_spec import qwen2_audio_chat

CORPUS = [
    "Maria took seven apples to the library on Tuesday.",
    "Where did Maria take the apples?",
    "She took them to the library.",
    "Omar painted three chairs in the garden at noon.",
] * 20

QUESTION = "Where did Maria take the apples?"
# Qwen2-Audio-7B-Instruct's chat template for one clip and a question, written out by hand.
EXPECTED_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "Where did Maria take the apples?<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tokenizer")
    return train_tokenizer(CORPUS, out_dir, vocab_size=400), out_dir


def test_files_and_special_tokens(saved):
    tokenizer, out_dir = saved
    assert (out_dir / "tokenizer.json").exists() and (out_dir / "tokenizer_config.json").exists()
    for token in SPECIAL_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4, 5]
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    assert len(tokenizer) <= 400


@pytest.mark.parametrize(
    "text", [CORPUS[0], "  odd   spacing\tand\nnewlines ", "Überraschung! 東京 🎧", "x" * 50]
)
def test_round_trip(saved, text):
    tokenizer, _ = saved
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_chat_template_matches_reference(saved):
    tokenizer, _ = saved
    messages = [
        {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": QUESTION}]}
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == EXPECTED_PROMPT
    # The system prompt was in the training texts: a handful of tokens, not one per character.
    system_ids = tokenizer.encode("You are a helpful assistant.", add_special_tokens=False)
    assert len(system_ids) <= 6


def test_reload_gives_identical_ids(saved):
    tokenizer, out_dir = saved
    reloaded = load_tokenizer(out_dir)
    for text in [EXPECTED_PROMPT, *CORPUS[:4], "unseen words: zebra quartz"]:
        assert reloaded.encode(text, add_special_tokens=False) == tokenizer.encode(
            text, add_special_tokens=False
        )
    assert reloaded.chat_template == tokenizer.chat_template


def test_load_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("num_audio_tokens", [1, 7, 750])
def test_sqa_prompt_expands_audio_placeholder(saved, num_audio_tokens):
    tokenizer, _ = saved
    prompt = qwen2_audio_chat(tokenizer).render(QUESTION, num_audio_tokens)
    assert prompt.replace("<|AUDIO|>" * num_audio_tokens, "<|AUDIO|>") == EXPECTED_PROMPT
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert ids.count(audio_id) == num_audio_tokens
    # The audio ids are one contiguous run between <|audio_bos|> and <|audio_eos|>.
    start = ids.index(tokenizer.convert_tokens_to_ids("<|audio_bos|>"))
    assert ids[start + 1 + num_audio_tokens] == tokenizer.convert_tokens_to_ids("<|audio_eos|>")


def test_sqa_prompt_with_model_audio_token_count(saved):
    tokenizer, _ = saved
    count = audio_token_count(300)  # 3 s of audio -> 300 mel frames -> 75 tokens
    assert count == 75
    ids = qwen2_audio_chat(tokenizer).prompt_ids(QUESTION, count)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|AUDIO|>")) == 75


def test_a_save_cut_short_leaves_no_tokenizer(tmp_path, monkeypatch):
    """A run killed while writing the tokenizer must not leave a partial tokenizer.json, which
    the next start would load as a whole one; an older partial folder is replaced."""
    out = tmp_path / "tokenizer"
    out.mkdir()
    (out / "tokenizer_config.json").write_text("{}")  # an older save, cut short
    real_save = transformers.PreTrainedTokenizerFast.save_pretrained

    def cut_short(self, directory, *args, **kwargs):
        pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(directory) / "tokenizer.json").write_text('{"trunc')
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", cut_short)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(["a few words to learn from"] * 4, out, vocab_size=300)
    assert not (out / "tokenizer.json").exists()

    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", real_save)
    tokenizer = train_tokenizer(["a few words to learn from"] * 4, out, vocab_size=300)
    assert load_tokenizer(out).encode("a few words") == tokenizer.encode("a few words")
    assert not (out / "tokenizer_config.json").read_text() == "{}"
