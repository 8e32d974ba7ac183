"""Granite Speech: conformer CTC encoder -> windowed Q-Former projector -> Granite decoder; its
config, model, Hub reader and writer, and its `ModelFamily` registration (family.py)."""
