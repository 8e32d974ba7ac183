"""Shared fixtures: a small embedded spoken-QA set and a tokenizer trained on it."""

import pytest

from sallm_jax.data.embedded_sqa import EMBEDDED_SQA, embedded_corpus_texts
from sallm_jax.data.manifest import read_manifest
from sallm_jax.data.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def small_sqa(tmp_path_factory):
    """(rows by split, tokenizer) for a 40/6/8-question embedded set."""
    root = tmp_path_factory.mktemp("small_sqa")
    manifests = EMBEDDED_SQA.build(root / "data", seed=1, num_train=40, num_validation=6,
                                   num_test=8)
    rows = {split: read_manifest(path) for split, path in manifests.items()}
    tokenizer = train_tokenizer(embedded_corpus_texts(rows["train"]), root / "tokenizer",
                                vocab_size=400)
    return rows, tokenizer


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One $SALLM_JAX_CACHE for the end-to-end runs of the smoke preset (test_main,
    test_multiprocess, test_smoke_configs, test_fault_injection, test_notebook): the embedded
    data, the smoke base model and compiled programs are built once per session (under
    pytest-xdist, once per worker). No test may depend on what another left in it."""
    return tmp_path_factory.mktemp("smoke_cache")
