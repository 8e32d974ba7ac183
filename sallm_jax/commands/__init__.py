"""The commands beside the main run: the GRPO-vs-SFT comparison, parity against transformers,
memory plans and measurements, random checkpoints laid out like the published ones."""
