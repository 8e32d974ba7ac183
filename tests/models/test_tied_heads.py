"""Tied LM heads follow transformers per family, on load and through export.

Qwen2-Audio: `Qwen2AudioForConditionalGeneration` declares no tied weights, so a config that
says `tie_word_embeddings: true` still saves and uses a head of its own. Granite Speech ties by
the top-level flag. Each case is checked against transformers' logits (tiny random models).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.commands import parity  # noqa: E402
from sallm_jax.models.hub.export import export_hf  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from sallm_jax.models.qwen2_audio.hub import load_hf_state_dict  # noqa: E402
from sallm_jax.models.qwen2_audio.model import Qwen2AudioLM  # noqa: E402
from tests.models.hf_tiny import (  # noqa: E402
    batch,
    hf_logits,
    qwen2_audio_config,
    randomise,
    save_checkpoint,
)
from tests.models.tiny import forward  # noqa: E402

TOL = 1e-4
HEAD, EMBED = "language_model.lm_head.weight", "language_model.model.embed_tokens.weight"


def ours(model, inputs) -> np.ndarray:
    features, lengths, input_ids, attention_mask = map(jnp.asarray, inputs)
    return np.asarray(forward(model, input_ids, attention_mask, features, lengths))


def tied_config_qwen2_audio(path) -> torch.nn.Module:
    config = qwen2_audio_config(tie_word_embeddings=True)
    config.text_config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    randomise(model)
    model.save_pretrained(path)
    return model


def test_tied_config_qwen2_audio_reads_its_saved_head(tmp_path):
    hf = tied_config_qwen2_audio(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert np.abs(saved[HEAD] - saved[EMBED]).max() > 0.1  # transformers kept its own head
    inputs = batch("qwen2_audio")
    valid = inputs[3].astype(bool)
    reference = hf_logits(hf, *inputs)
    model = load_checkpoint(tmp_path).model
    assert model.language_model.lm_head is not None
    np.testing.assert_allclose(ours(model, inputs)[valid], reference[valid], atol=TOL, rtol=0)


def test_tied_qwen2_audio_exports_the_head_transformers_reads(tmp_path):
    """A model built tied (no lm_head variable, as the configs' tiny preset is) exports its
    table as the head too, which transformers then reads."""
    tied_config_qwen2_audio(tmp_path / "source")
    untied = load_checkpoint(tmp_path / "source").model
    config = dataclasses.replace(untied.config, text=dataclasses.replace(
        untied.config.text, tie_word_embeddings=True))
    model = nnx.eval_shape(lambda: Qwen2AudioLM(config, rngs=nnx.Rngs(0)))
    tensors = dict(load_file(tmp_path / "source" / "model.safetensors"))
    model = load_hf_state_dict(model, tensors)  # the saved head is ignored: tied in memory
    assert model.language_model.lm_head is None
    inputs = batch("qwen2_audio")
    valid = inputs[3].astype(bool)
    expected = ours(model, inputs)
    export_hf(model, tmp_path / "exported")
    hf = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
        tmp_path / "exported", dtype=torch.float32).eval()
    np.testing.assert_allclose(hf_logits(hf, *inputs)[valid], expected[valid], atol=TOL, rtol=0)
    saved = load_file(tmp_path / "exported" / "model.safetensors")
    np.testing.assert_array_equal(saved[HEAD], saved[EMBED])


@pytest.mark.parametrize("tied", [True, False])
def test_granite_export_round_trip_tied_and_untied(tmp_path, tied):
    hf = save_checkpoint(tmp_path / "source", "granite_speech")
    if not tied:
        hf.config.tie_word_embeddings = False
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight) * 0.1)
        hf.save_pretrained(tmp_path / "source")
    checkpoint = load_checkpoint(tmp_path / "source")
    assert (checkpoint.model.language_model.lm_head is None) == tied
    export_hf(checkpoint.model, tmp_path / "exported")
    inputs = parity.parity_inputs(checkpoint)
    valid = inputs.attention_mask.astype(bool)
    source, exported = (
        parity.transformers_logits(str(tmp_path / name), "granite_speech", inputs,
                                   dtype="float32") for name in ("source", "exported"))
    np.testing.assert_allclose(exported[valid], source[valid], atol=TOL, rtol=0)
    saved = load_file(tmp_path / "exported" / "model.safetensors")
    assert (HEAD in saved) == (not tied)
