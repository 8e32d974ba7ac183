"""The registry of embedded sets: one record per set, the sets a run may name, their defaults,
and the errors that name a set."""

import ml_collections
import pytest

from sallm_jax.data import embedded_common
from sallm_jax.data.embedded_sets import EMBEDDED_SETS, task_sets
from sallm_jax.run.splits import manifest_paths
from sallm_jax.runtime.user_errors import ConfigError


def test_every_set_is_registered_under_its_name():
    assert sorted(EMBEDDED_SETS) == ["embedded_aqa", "embedded_asr", "embedded_ast",
                                     "embedded_sqa"]
    for name, embedded in EMBEDDED_SETS.items():
        assert embedded.name == name == f"embedded_{embedded.dataset}"
        assert set(embedded.sizes) == set(embedded_common.SPLITS)


def test_a_run_names_any_set_but_the_base_corpus():
    assert sorted(task_sets()) == ["embedded_aqa", "embedded_ast", "embedded_sqa"]
    assert EMBEDDED_SETS["embedded_asr"].base_corpus


def test_build_fills_the_sizes_left_out_from_the_defaults(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(embedded_common, "build_embedded",
                        lambda embedded, root, **kwargs: calls.append((embedded, root, kwargs)))
    asr = EMBEDDED_SETS["embedded_asr"]
    asr.build(tmp_path, seed=4, num_validation=7)
    assert calls == [(asr, tmp_path, {"seed": 4, "sizes": {"train": 4000, "validation": 7,
                                                            "test": 100}})]


def test_a_size_below_one_names_the_set(tmp_path):
    with pytest.raises(ValueError, match="embedded_ast: num_train must be >= 1, got 0"):
        EMBEDDED_SETS["embedded_ast"].build(tmp_path, num_train=0)
    assert not list(tmp_path.iterdir())


def test_an_unknown_data_name_lists_the_valid_ones():
    cfg = ml_collections.ConfigDict({"name": "embedded_asr", "root": "", "seed": 0})
    with pytest.raises(ConfigError) as error:
        manifest_paths(cfg)
    assert str(error.value) == ("data.name: expected 'manifest' or one of ['embedded_aqa', "
                                "'embedded_ast', 'embedded_sqa'], got 'embedded_asr'")
