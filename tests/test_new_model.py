"""New models through the family registry (`model.family`): the config names the family and its
sizes, `build_model` builds that family's class, and the prompts carry the placeholder the
tokenizer holds; a smoke run of a tiny Granite Speech model goes end to end."""

import json
import pathlib

import pytest
import tokenizers
import transformers
from sallm_jax.configs.base import use_family
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.commands.random_checkpoint import family_tokenizer
from sallm_jax.data.tokenizer import AUDIO_TOKEN, train_tokenizer
from sallm_jax.models.families import families
from sallm_jax.models.granite_speech.config import GraniteSpeechConfig
from sallm_jax.models.granite_speech.model import GraniteSpeechLM
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM
from sallm_jax.run.experiment import build_model, run_experiment
from sallm_jax.run.new_model import new_model_config, prompt_family
from sallm_jax.run.validate import validate_config
from sallm_jax.runtime.user_errors import ConfigError
from sallm_jax.train.base import base_directory, base_settings

CACHE = pathlib.Path("/cache")
TEXTS = ["the cat sat on the mat", "where did the dog go", "anna went to the market"] * 20


def granite_config(preset: str = "tiny"):
    return use_family(get_config(preset), "granite_speech")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("tokenizer"), vocab_size=300)


def test_the_default_family_is_qwen2_audio_at_its_tiny_sizes():
    cfg = get_config("tiny")
    assert cfg.model.family == "qwen2_audio"
    expected = families()["qwen2_audio"].tiny_sizes()
    assert cfg.model.audio.to_dict() == expected["audio"]
    assert cfg.model.text.to_dict() == expected["text"]


def test_granite_sizes_build_a_granite_config():
    config = new_model_config(granite_config(), vocab_size=300, audio_token_id=3)
    assert isinstance(config, GraniteSpeechConfig)
    assert config.encoder.hidden_dim == 64 and config.text.vocab_size == 300
    validate_config(granite_config())


def test_an_unknown_family_names_the_key():
    cfg = get_config("tiny")
    cfg.model.family = "whisper"
    with pytest.raises(ConfigError, match=r"^model\.family: expected one of \['granite_speech', "
                                          r"'qwen2_audio'\], got 'whisper'"):
        validate_config(cfg)


def test_another_familys_sizes_name_the_sizes_and_the_fix():
    cfg = get_config("tiny")
    cfg.model.family = "granite_speech"  # the sizes stay Qwen2-Audio's
    with pytest.raises(ConfigError, match=r"^model\.audio / model\.text: not granite_speech's "
                                          r"sizes .*use_family\(c, 'granite_speech'\)"):
        validate_config(cfg)


def test_audio_longer_than_the_whisper_positions_is_refused_for_qwen2_audio_only():
    cfg = get_config("tiny")
    cfg.data.audio_buckets_s = (3.25, 9.0)  # 400 positions x 2 mel frames of 10 ms: 8 s
    with pytest.raises(ConfigError, match=r"^data\.audio_buckets_s: expected at most 8 s"):
        validate_config(cfg)
    cfg = granite_config()
    cfg.data.audio_buckets_s = (3.25, 9.0)  # relative positions: any length
    validate_config(cfg)


def test_the_base_key_names_the_family_only_when_it_is_not_the_default():
    qwen, granite = get_config("tiny"), granite_config()
    assert "family" not in base_settings(qwen)["model"]  # the keys of earlier bases stand
    assert base_settings(granite)["model"]["family"] == "granite_speech"
    assert base_directory(qwen, CACHE) != base_directory(granite, CACHE)


def test_the_project_tokenizer_speaks_qwen2_audio_whatever_the_family(tokenizer):
    granite = families()["granite_speech"]
    assert prompt_family(tokenizer, granite).model_type == "qwen2_audio"


def test_a_granite_tokenizer_speaks_granite():
    granite_tokenizer = family_tokenizer("granite_speech")  # `<|audio|>`, no `<|AUDIO|>`
    assert prompt_family(granite_tokenizer, families()["qwen2_audio"]).model_type == (
        "granite_speech")


def test_a_tokenizer_without_placeholders_is_refused_naming_the_key():
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(TEXTS, tokenizers.trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    plain = transformers.PreTrainedTokenizerFast(tokenizer_object=backend)
    with pytest.raises(ConfigError, match=r"^tokenizer\.path: .* holds none of the audio "
                                          r"placeholders \['<\|AUDIO\|>', '<\|audio\|>'\]"):
        prompt_family(plain, families()["qwen2_audio"])


@pytest.mark.parametrize("family, model_class", [("qwen2_audio", Qwen2AudioLM),
                                                 ("granite_speech", GraniteSpeechLM)])
def test_build_model_builds_the_configured_family(family, model_class, tokenizer, tmp_path):
    cfg = use_family(get_config("tiny"), family)
    model, chat = build_model(cfg, {}, tmp_path, tokenizer=tokenizer)
    assert type(model) is model_class
    assert model.config.audio_token_id == tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    assert chat.audio_token == AUDIO_TOKEN
    prompt = chat.prompt_ids("what did she say?", num_audio_tokens=7)
    assert prompt.count(model.config.audio_token_id) == 7


@pytest.mark.slow
def test_a_tiny_granite_model_runs_every_stage(tmp_path, smoke_cache, monkeypatch):
    monkeypatch.setenv("SALLM_JAX_CACHE", str(smoke_cache))
    cfg = granite_config("smoke")
    results = run_experiment(cfg, tmp_path / "run")
    assert list(results) == ["base", "warmup", "sft", "grpo"]
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["grpo"]["test"]["num_examples"] == cfg.data.num_test
    base = json.loads((base_directory(cfg, smoke_cache) / "base.json").read_text())
    assert base["settings"]["model"]["family"] == "granite_speech"
