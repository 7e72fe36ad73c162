"""The DeepSpeed engine: its JSON config, the model it wraps, optimizers and the learning-rate
schedule."""
