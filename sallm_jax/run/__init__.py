"""One run of an experiment: its config file and checks, its stages in order, its summary."""
