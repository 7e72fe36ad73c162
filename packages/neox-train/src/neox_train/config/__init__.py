"""The run config: GPT-NeoX YAML files read, merged and validated into typed sections; batch
math; the checks of a run's inputs."""
