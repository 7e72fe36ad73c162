"""Saving and resuming runs: step directories, where a run starts, the run lock, relayout, S3."""
