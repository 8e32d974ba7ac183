"""Every registered family's checkpoint reading against what transformers' save_pretrained
writes: the key table, both key layouts, shards, and the errors that name bad keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sallm_jax.models.families import family_for_type  # noqa: E402
from sallm_jax.models.hub.load import load_checkpoint  # noqa: E402
from tests.models.hf_tiny import jax_model, read_tensors, save_checkpoint  # noqa: E402
from tests.models.tiny import FAMILY_TYPES  # noqa: E402


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def checkpoint(request, tmp_path_factory):
    """(family, save_pretrained directory, the transformers model) with a head of its own."""
    path = tmp_path_factory.mktemp(request.param)
    hf = save_checkpoint(path, request.param, tie_word_embeddings=False)
    return family_for_type(request.param), path, hf


def _abstract(family, config):
    return nnx.eval_shape(lambda: family.model_class(config, rngs=nnx.Rngs(0)))


def test_map_covers_exactly_the_saved_keys_in_both_layouts(checkpoint):
    family, path, hf = checkpoint
    tensors = read_tensors(path)
    model = jax_model(path)
    saved = {k for k in tensors if not k.endswith("num_batches_tracked")}
    assert set(family.param_map(model.config)) == saved
    assert "language_model.lm_head.weight" in saved
    # The in-memory 5.x layout (model.*, lm_head.weight) loads to the same variables.
    in_memory = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert "lm_head.weight" in in_memory
    other = family.load_state_dict(_abstract(family, model.config), in_memory)
    for a, b in zip(*(nnx.to_flat_state(nnx.state(m)) for m in (model, other)), strict=True):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1][...], b[1][...])


def test_sharded_checkpoint(checkpoint, tmp_path):
    _, path, _ = checkpoint
    tensors = read_tensors(path)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = read_tensors(tmp_path)
    assert set(loaded) == set(tensors)
    for k in names:
        np.testing.assert_array_equal(loaded[k], tensors[k])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_tensors(tmp_path / "missing")


def test_errors_name_every_bad_key(checkpoint):
    family, path, _ = checkpoint
    config = jax_model(path).config
    tensors = read_tensors(path)
    missing = "language_model.model.layers.0.mlp.up_proj.weight"
    extra, mismatched = f"{family.encoder}.extra.weight", f"{family.projector}.linear.weight"
    tensors.pop(missing)
    tensors[extra] = np.zeros(3, np.float32)
    tensors[mismatched] = np.zeros((12, 9), np.float32)
    with pytest.raises(ValueError) as error:
        family.load_state_dict(_abstract(family, config), tensors, source="ckpt")
    message = str(error.value)
    assert f"cannot load ckpt into {family.model_class.__name__}" in message
    assert f"missing keys: ['{missing}']" in message
    assert f"unexpected keys: ['{extra}']" in message
    assert f"shape mismatch for {mismatched}: checkpoint (12, 9)" in message


def test_processor_settings_without_processor_files(checkpoint):
    """A directory with no tokenizer or preprocessor files: the family's own settings."""
    family, path, _ = checkpoint
    loaded = load_checkpoint(path)
    assert loaded.family is family and loaded.tokenizer is None
    settings, config = loaded.processor, loaded.model.config
    assert settings.feature_size == family.input_width(config)
    assert (settings.audio_token, settings.audio_token_id) == (family.audio_token,
                                                               config.audio_token_id)
    assert settings.sampling_rate == family.sampling_rate
