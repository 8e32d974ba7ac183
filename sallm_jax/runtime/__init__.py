"""What every layer of a run shares: user errors, stop signals, progress bars, host memory,
record files and shortened long fields."""
