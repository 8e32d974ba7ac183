"""Commands beside the run: GRPO vs SFT, transformers parity, memory, random checkpoints."""
