"""Granite Speech: a LoRA adapter in the released checkpoints' key layout, merged export,
and the parity command's API, against transformers (tiny random model, float32)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_tiny import merge_adapter_by_hand, save_granite_speech, write_adapter  # noqa: E402

from sallm_jax import parity  # noqa: E402
from sallm_jax.models.hub.export import export_hf  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402

TOL = 1e-4


def test_granite_speech_export_round_trip(tmp_path):
    """Granite Speech with a LoRA adapter in the released checkpoints' key layout: loaded,
    exported merged, and checked against transformers through the parity command's API."""
    base = tmp_path / "base"
    hf = save_granite_speech(base)
    text = hf.config.text_config
    kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
    shapes = {
        f"language_model.model.layers.{i}.self_attn.{proj}": (text.hidden_size, out)
        for i in range(text.num_hidden_layers)
        for proj, out in (("q_proj", text.hidden_size), ("v_proj", kv))
    }
    torch.manual_seed(2)
    write_adapter(tmp_path / "adapter", shapes, rank=4, alpha=16.0)
    merge_adapter_by_hand(hf, tmp_path / "adapter")
    hf.save_pretrained(tmp_path / "reference")  # the formula, applied in torch

    checkpoint = load_checkpoint(base, adapter_dir=tmp_path / "adapter")
    assert checkpoint.family.model_type == "granite_speech"
    assert checkpoint.processor.audio_token == "<|audio|>"
    assert checkpoint.processor.feature_size == 160
    export_hf(checkpoint.model, tmp_path / "merged", lora="merged")
    assert load_checkpoint(tmp_path / "merged").model.config == checkpoint.model.config

    # The adapter reached the right layers with the right scale: transformers on our merged
    # export computes what transformers on the hand-merged model does.
    inputs = parity.parity_inputs(checkpoint)
    valid = inputs.attention_mask.astype(bool)
    exported, reference = (
        parity.transformers_logits(str(tmp_path / name), "granite_speech", inputs, dtype="float32")
        for name in ("merged", "reference")
    )
    assert (
        np.abs(
            reference
            - parity.transformers_logits(str(base), "granite_speech", inputs, dtype="float32")
        )[valid].max()
        > 0.1
    )
    np.testing.assert_allclose(exported[valid], reference[valid], atol=TOL, rtol=0)
    pytest.importorskip("peft")  # transformers loads the adapter form through peft
    # The adapter form: transformers loads the PEFT files beside the weights (has_lora_adapter)
    # and switches the adapter on for audio inputs.
    export_hf(checkpoint.model, tmp_path / "adapter_form", lora="adapter")
    with_adapter = parity.transformers_logits(
        str(tmp_path / "adapter_form"), "granite_speech", inputs, dtype="float32"
    )
    np.testing.assert_allclose(with_adapter[valid], reference[valid], atol=TOL, rtol=0)
    # And sallm_jax on the export agrees with transformers (one JAX compilation in this test).
    diff, positions = parity.max_logit_difference(tmp_path / "merged")
    assert diff < TOL and positions == valid.sum()
