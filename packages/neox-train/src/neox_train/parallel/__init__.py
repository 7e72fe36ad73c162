"""The parallel runtime: process groups, the (pipeline, data, tensor) grid, the hung-rank
watchdog."""
