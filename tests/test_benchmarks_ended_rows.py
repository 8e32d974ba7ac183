"""benchmarks/ended_rows.py: the ended share against a simulated decode loop, the bytes
share against the arrays a rollout reads, and one run at toy sizes."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import ended_rows
from benchmarks.device import Shapes, smoke_config
from sallm_jax.models.abstract import abstract_model
from sallm_jax.models.kv_cache import init_cache


def test_ended_share_equals_the_decode_loops_count():
    rng = np.random.default_rng(0)
    records = [{"validation_score": 0.5}]  # a record of another kind is passed over
    expected = []
    for _ in range(5):
        lengths = rng.integers(1, 17, 32)  # tokens, the end token included
        steps = lengths.max()  # the loop stops when the longest row has ended
        ended = sum(int((lengths <= t).sum()) for t in range(steps))
        expected.append(ended / (lengths.size * steps))
        records.append({"completion_length": float(lengths.mean()),
                        "completion_length/max": float(lengths.max())})
    np.testing.assert_allclose(ended_rows.ended_shares(records), expected, rtol=1e-12)


def test_row_bytes_share_counts_the_arrays_a_decode_step_reads():
    config = smoke_config()  # granite_speech_2b's structure at toy widths
    shapes = Shapes(batch=3, group=4, text_tokens=0, audio_s=0.0, completion=10, reps=1)
    prompt_len = 7

    def nbytes(tree):
        return sum(x.size * 2 for x in jax.tree.leaves(tree))  # bfloat16

    rows = nbytes(jax.eval_shape(lambda: init_cache(config.text, 12, 10, jnp.bfloat16)))
    prompts = nbytes(jax.eval_shape(lambda: init_cache(config.text, 3, prompt_len, jnp.bfloat16)))
    lm = abstract_model(config).language_model
    kernels = [x for path, x in jax.tree.leaves_with_path(nnx.state(lm.layers, nnx.Param))
               if jax.tree_util.keystr(path).endswith("['kernel'].value")]
    weights = nbytes(kernels) + 2 * math.prod(lm.embed_tokens.embedding.shape)  # tied head
    share = ended_rows.row_bytes_share(config, shapes, prompt_len)
    assert share == rows / (rows + prompts + weights)


def test_fit_line_recovers_a_line():
    a, b = ended_rows.fit_line([128, 64, 32, 16], [0.5 + 0.01 * n for n in (128, 64, 32, 16)])
    assert math.isclose(a, 0.5, rel_tol=1e-9) and math.isclose(b, 0.01, rel_tol=1e-9)


def test_toy_run_times_every_batch_and_weighs_the_runs_steps(capsys, tmp_path):
    (tmp_path / "grpo").mkdir()
    records = [{"stage": "grpo", "step": 5 * (i + 1), "completion_length": mean,
                "completion_length/max": longest, "step_seconds": seconds}
               for i, (mean, longest, seconds) in enumerate([(3.0, 6.0, 0.5), (4.0, 5.0, 0.25)])]
    (tmp_path / "grpo" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    ended_rows.main(["--sizes", "tiny", "--reps", "1", "--prompts", "2,1",
                     "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    timed = [line.split(" | ") for line in lines if line.startswith("| tiny | ")]
    assert [r[1] for r in timed[:2]] == ["16", "8"]
    assert all(float(r[2].split()[0]) > 0 for r in timed[:2])
    assert "mean 0.350, range 0.200-0.500" in out  # 1 - 3/6 and 1 - 4/5
    step_s = float(timed[0][2].split()[0]) / 1e3  # the full batch's step, as printed
    loop = re.search(r"decode loop \(tiny, 16 rows\): ([0-9.]+) of", out)
    expected = (6.0 * step_s / 0.5 + 5.0 * step_s / 0.25) / 2
    assert loop and math.isclose(float(loop.group(1)), expected, rel_tol=0.02, abs_tol=1e-3)
