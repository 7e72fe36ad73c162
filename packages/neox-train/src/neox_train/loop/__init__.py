"""The training loop: steps, batches, curriculum, preemption."""
