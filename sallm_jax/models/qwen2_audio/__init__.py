"""Qwen2-Audio: Whisper-style encoder -> average pooling -> linear projector -> Qwen2 decoder;
its config, model, Hub reader and writer, and its `ModelFamily` registration (family.py)."""
