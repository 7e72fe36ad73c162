"""What a run reports: metrics writers, progress, FLOPs and MFU, parameter norms, profiling."""
