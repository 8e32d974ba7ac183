"""Metric names an evaluation reports (`eval.evaluate.task_metrics`) in table order, and which
are better when higher (valid `select_on` values; what the GRPO-versus-SFT comparison averages)."""

METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rouge_l", "meteor", "wer", "accuracy")
LOWER_IS_BETTER = ("wer",)
HIGHER_IS_BETTER = tuple(m for m in METRICS if m not in LOWER_IS_BETTER)
# The console's results table (`experiment.format_table`), narrow enough for a terminal: ROUGE-L
# stands for the ROUGE family there; results.json and report.md keep every metric.
SUMMARY = tuple(m for m in METRICS if m not in ("rouge1", "rouge2"))
