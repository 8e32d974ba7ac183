"""Shared fixtures: a small embedded spoken-QA set and a tokenizer trained on it."""

import pytest

from sallm_jax.data.embedded_sqa import build_embedded_sqa, embedded_corpus_texts
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def small_sqa(tmp_path_factory):
    """(rows by split, tokenizer) for a 40/6/8-question embedded set."""
    root = tmp_path_factory.mktemp("small_sqa")
    manifests = build_embedded_sqa(root / "data", seed=1, num_train=40, num_validation=6,
                                   num_test=8)
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    tokenizer = train_tokenizer(embedded_corpus_texts(rows["train"]), root / "tokenizer",
                                vocab_size=400)
    return rows, tokenizer


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One $SALLM_JAX_CACHE for the end-to-end runs of the smoke preset (test_main,
    test_multiprocess): the embedded data and compiled programs are built once. None of them
    but test_main's first builds a base model, whose caching that test checks."""
    return tmp_path_factory.mktemp("smoke_cache")


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`-n auto --dist loadgroup`) the tests that share `smoke_cache` run
    in one worker, in collection order, so its data, compiled programs and base model are built
    once (each worker has a session of its own)."""
    for item in items:
        if "smoke_cache" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke_cache"))
