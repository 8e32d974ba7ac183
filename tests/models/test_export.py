"""Qwen2-Audio's processor files: read with the checkpoint, carried through an export. The
export round trip of every family is in test_family_export.py."""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.hub.export import export_hf  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from tests.models.hf_tiny import save_qwen2_audio  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A checkpoint dir with tokenizer and preprocessor files."""
    path = tmp_path_factory.mktemp("export_source")
    save_qwen2_audio(path, with_processor_files=True)
    return path


def test_load_checkpoint_returns_tokenizer_and_processor_settings(source):
    checkpoint = load_checkpoint(source, dtype="bfloat16")
    settings = checkpoint.processor
    assert (settings.num_mel_bins, settings.feature_size, settings.sampling_rate) == (80, 80, 16000)
    assert (settings.audio_token, settings.audio_token_id) == ("<|AUDIO|>", 299)
    assert settings.chat_template.startswith("{% for m in messages %}")
    assert checkpoint.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == 299
    kernel = checkpoint.model.language_model.layers[0].self_attn.q_proj.kernel
    assert kernel.get_value().dtype == jnp.bfloat16
    stored = load_file(source / "model.safetensors")[
        "language_model.model.layers.0.self_attn.q_proj.weight"
    ]
    np.testing.assert_array_equal(kernel[...], stored.T.astype(ml_dtypes.bfloat16))
    assert checkpoint.family.model_type == "qwen2_audio"


def test_export_carries_the_processor_files(source, tmp_path):
    export_hf(load_checkpoint(source).model, tmp_path, source_dir=source)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"tokenizer.json", "preprocessor_config.json"} <= files
    again = load_checkpoint(tmp_path)
    assert again.tokenizer is not None
    assert again.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == 299
