"""draw_spread against a hand-computed case."""

import json

import pytest

from sallm_jax.eval.draw_spread import draw_spread, main, read_predictions

RECORDS = [
    # Three draws: two alike -> 2 distinct, modal share 2/3; "To the park." is short (3 words).
    {"reference": "Maria went to the park.",
     "draws": ["Maria went to the park.", "Maria went to the park.", "To the park."]},
    # All different -> 3 distinct, modal share 1/3; "The park." is short.
    {"reference": "The park.", "draws": ["She went to the park.", "The park.", "Park."]},
]


def test_hand_computed_case():
    stats = draw_spread(RECORDS)
    assert stats["questions"] == 2
    assert stats["distinct_draws"] == pytest.approx((2 + 3) / 2)
    assert stats["modal_share"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert stats["short_answers"] == pytest.approx(3 / 6)
    assert stats["short_references"] == pytest.approx(1 / 2)


def test_greedy_predictions_are_refused():
    with pytest.raises(ValueError, match="draws"):
        draw_spread([{"reference": "x", "prediction": "x"}])


def test_reads_a_predictions_file(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_predictions(path) == RECORDS
    main([str(path)])
    assert "distinct_draws=2.500" in capsys.readouterr().out
