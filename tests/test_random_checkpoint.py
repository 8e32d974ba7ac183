"""`sallm-jax random-checkpoint`: a directory at a published config that the loader, the chat
format and transformers read as they read the published one; the templates it writes are the
published texts."""

import hashlib
import json

import ml_dtypes
import numpy as np
import pytest

from sallm_jax.commands.random_checkpoint import chat_template, write_random_checkpoint
from sallm_jax.data.chat_format import chat_format
from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.models.hub.safetensors_io import SafetensorsDir
from sallm_jax.models.presets import get_preset

# The git-lfs pointer of llama.cpp's models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja
# (a public copy of the Granite 3.3 instruct template): its sha256 and size.
GRANITE_TEMPLATE_SHA256 = "3c71df5f659987462c882bf9e295b597dc19902467a7312ea382c5896681bc02"
GRANITE_TEMPLATE_BYTES = 4567


def test_the_templates_are_the_published_texts():
    granite = chat_template("granite_speech").encode()
    assert len(granite) == GRANITE_TEMPLATE_BYTES
    assert hashlib.sha256(granite).hexdigest() == GRANITE_TEMPLATE_SHA256
    transformers = pytest.importorskip("transformers")
    assert chat_template("qwen2_audio") == (
        transformers.Qwen2AudioProcessor.default_chat_template.fget(None))


@pytest.mark.slow
def test_a_granite_speech_2b_checkpoint_cut_to_one_layer(tmp_path):
    """The preset's widths and vocabulary, one decoder and one encoder layer, in bfloat16."""
    written = write_random_checkpoint(tmp_path, "granite_speech_2b", layers=1,
                                      encoder_layers=1, dtype="bfloat16")
    preset = get_preset("granite_speech_2b")
    checkpoint = load_checkpoint(tmp_path, dtype="bfloat16")
    config = checkpoint.model.config
    assert (config.text.hidden_size, config.text.vocab_size, config.text.num_hidden_layers) == (
        preset.text.hidden_size, preset.text.vocab_size, 1)
    assert config.encoder.num_layers == 1
    assert config.audio_token_id == checkpoint.tokenizer.convert_tokens_to_ids("<|audio|>")
    with SafetensorsDir(tmp_path) as tensors:
        assert {tensors[k].dtype for k in tensors} == {np.dtype(ml_dtypes.bfloat16)}
        assert sum(tensors[k].size for k in tensors) == written["num_params"]
        norm = tensors["language_model.model.norm.weight"]
        np.testing.assert_array_equal(norm.astype(np.float32), 1.0)
    chat = chat_format(checkpoint.tokenizer, checkpoint.family, config.audio_token_id,
                       eos_token_ids=checkpoint.processor.eos_token_ids)
    assert chat.render("Where did Sofia go?", 2).startswith(
        "<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.")
    assert chat.stop_ids == (checkpoint.tokenizer.convert_tokens_to_ids("<|end_of_text|>"),)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.text_config.vocab_size == preset.text.vocab_size
    assert json.loads((tmp_path / "processor_config.json").read_text())["audio_token"] == (
        "<|audio|>")
