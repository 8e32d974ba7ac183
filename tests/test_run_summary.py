"""The start-up screen, against the smoke preset it describes (numbers from
configs/base.py: apply_smoke over base_config) and a model counted by hand."""

import pathlib

from flax import nnx
from sallm_jax.configs.sqa_grpo import get_config

from sallm_jax.run.summary import parameter_counts, run_summary


def test_parameter_counts_of_a_linear_layer():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))  # a 3 x 4 kernel and 4 biases
    assert parameter_counts(layer, nnx.Param) == (16, 16)
    assert parameter_counts(layer, nnx.PathContains("bias")) == (16, 4)


def test_summary_of_the_smoke_preset(tmp_path):
    cfg = get_config("smoke")
    workdir, base_dir = tmp_path / "run", tmp_path / "cache" / "base" / "key"
    (workdir / "warmup" / "params").mkdir(parents=True)  # warmup finished already
    splits = {"train": [None] * 24, "validation": [None] * 4, "test": [None] * 8}
    corpus = {"train": [None] * 24, "validation": [None] * 4}
    text = run_summary(cfg, workdir=workdir, cache_dir=tmp_path / "cache", splits=splits,
                       base_splits=corpus, parameters=(1_234_567, 1_234_567),
                       base_dir=base_dir, protocols=("", "_greedy"))
    assert text.splitlines() == [
        f"run       {workdir}",
        f"cache     {tmp_path / 'cache'}",
        "model     1,234,567 parameters, 1,234,567 trainable "
        "(a new model of model.text / model.audio's sizes)",
        "data      embedded_sqa: train 24, validation 4, test 8 rows",
        "          base corpus (embedded ASR): train 24, validation 4 rows",
        "stages",
        f"  base    4 steps x batch 4, lr 0.002 (built into {base_dir})",
        "  warmup  4 steps x batch 4, lr 0.002 (done)",
        "  sft     4 steps x batch 4, lr 0.001, validation every 2 steps",
        "  grpo    3 steps x 2 prompts x 4 completions, lr 0.0004, validation every 25 steps",
        "  eval    test, test_greedy of each trained stage, batch 8",
        "Each stage shows its rate and time left as it runs.",
    ]
    base_dir.mkdir(parents=True)
    (base_dir / "base.json").write_text('{"heldout_asr": {"wer": 50.0}}')  # a built base
    cached = run_summary(cfg, workdir=workdir, cache_dir=pathlib.Path("c"), splits=splits,
                         base_splits=corpus, parameters=(10, 2), base_dir=base_dir,
                         protocols=("",))
    assert (f"  base    4 steps x batch 4, lr 0.002 (cached in {base_dir}; held-out WER 50.00 %)"
            in cached)
    (base_dir / "base.json").write_text('{"heldout_asr": {"wer": 0.456}, "shipped": "s"}')
    shipped = run_summary(cfg, workdir=workdir, cache_dir=pathlib.Path("c"), splits=splits,
                          base_splits=corpus, parameters=(10, 2), base_dir=base_dir,
                          protocols=("",))
    assert "(cached in " + f"{base_dir}; held-out WER 0.46 %, shipped)" in shipped
    assert "model     10 parameters, 2 trainable" in cached
    assert "  eval    test of each trained stage, batch 8" in cached
