"""Shared by every layer of a run: errors, stop signals, progress, host memory, record files."""
