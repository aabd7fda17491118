"""Where a run's evidence goes: the run folder, the console and W&B."""
