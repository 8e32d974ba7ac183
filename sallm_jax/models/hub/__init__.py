"""Hugging Face Hub I/O for every family: safetensors files, key tables, the checkpoint loader,
PEFT adapter files and export."""
