"""The metric names every table and check reads (`metrics/names.py`) are the ones an
evaluation reports, and their direction is what the metrics do on right and wrong answers."""

from sallm_jax.data.manifest import ManifestRow
from sallm_jax.eval.evaluate import task_metrics
from sallm_jax.metrics.names import HIGHER_IS_BETTER, LOWER_IS_BETTER, METRICS, SUMMARY

ROWS = [ManifestRow(id="q", audio="a.wav", task="sqa", question="Who spoke?",
                    answer="the old man spoke first"),
        ManifestRow(id="c", audio="b.wav", task="aqa", question="Which animal?",
                    answer="a dog", choices=["a dog", "a cat"], answer_index=0,
                    meta={"category": "sound"})]
RIGHT = ["the old man spoke first", "<answer>a dog</answer>"]
WRONG = ["nobody at all", "<answer>a cat</answer>"]


def overall(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if "/" not in k}


def test_the_names_are_what_an_evaluation_reports():
    assert set(overall(task_metrics(ROWS, RIGHT))) == set(METRICS)
    assert set(HIGHER_IS_BETTER) | set(LOWER_IS_BETTER) == set(METRICS)
    assert not set(HIGHER_IS_BETTER) & set(LOWER_IS_BETTER)
    assert [m for m in METRICS if m in SUMMARY] == list(SUMMARY)
    assert {"bleu", "rouge_l", "wer", "accuracy"} <= set(SUMMARY)


def test_the_direction_of_each_metric():
    right, wrong = overall(task_metrics(ROWS, RIGHT)), overall(task_metrics(ROWS, WRONG))
    for name in HIGHER_IS_BETTER:
        assert right[name] > wrong[name], name
    for name in LOWER_IS_BETTER:
        assert right[name] < wrong[name], name
