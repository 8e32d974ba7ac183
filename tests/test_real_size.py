"""The path of benchmarks/real_size.py at granite_speech_2b's real widths and vocabulary, cut to
one decoder and one encoder layer: a random checkpoint written by `sallm-jax random-checkpoint`,
the sqa `paper` preset cut down with LoRA, killed once its first GRPO checkpoint is on disk,
resumed to the end, and its GRPO parameters exported; the export loads back at the same widths.
"""

import json

import pytest

from benchmarks.real_size import GIB, measure
from sallm_jax.models.hub.load import load_checkpoint
from sallm_jax.models.presets import get_preset

pytestmark = pytest.mark.slow


def test_the_paper_preset_at_real_widths_with_one_layer(tmp_path):
    figures = measure(tmp_path, "granite_speech_2b", layers=1, encoder_layers=1, prompts=1,
                      max_rss=16 * GIB)
    assert figures["killed"]["status"] == 9 and not figures["killed"]["over_memory"]
    assert figures["resumed"]["status"] == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert figures["export"]["status"] == 0, (tmp_path / "export.log").read_text()[-3000:]
    assert "resumed from update 1" in (tmp_path / "resumed.log").read_text()
    for stage in ("sft", "grpo"):
        assert figures["results"][stage]["test"]["num_examples"] == 4
    assert figures["checkpoint_bytes"] > 0 and figures["predicted_bytes"] > 0
    assert any(name == "jit(update)" for name, _ in figures["compiles_first"])
    exported = load_checkpoint(tmp_path / "exported", dtype="bfloat16").model.config
    preset = get_preset("granite_speech_2b")
    assert (exported.text.hidden_size, exported.text.vocab_size) == (
        preset.text.hidden_size, preset.text.vocab_size)
    json.dumps(figures)  # the command prints them as one JSON record
