"""Profiling a few steps of a run (`profile`, `memory_profiling`, from profile_step_start to
profile_step_stop inclusive).

- `profile`: torch's profiler records the steps (CPU, and CUDA kernels on GPUs) and writes a
  Chrome/Perfetto trace per rank, LOG_DIR/profile/trace_rankN.json; every step is a named range
  ("step N", and without a pipeline "forward", "backward", "optimizer" inside it). On GPUs the
  same ranges are NVTX ranges and the window is bracketed by cudaProfilerStart/Stop, so that
  `nsys profile --capture-range=cudaProfilerApi` records exactly those steps, as under GPT-NeoX.
- `memory_profiling`: on GPUs torch's CUDA memory history over the window, dumped as a snapshot
  per rank (memory_profiling_path/memory_rankN.pickle, opened at pytorch.org/memory_viz); on CPUs,
  where there is no such history, a profiler trace with memory events (memory_rankN.json).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from neox_train.config.schema import ConfigError
from neox_train.config.sections import LoggingConfig

log = logging.getLogger(__name__)


class StepProfiler:
    """Starts before profile_step_start, stops after profile_step_stop (or when the run ends)."""

    def __init__(self, config: LoggingConfig, log_dir: str | None, rank: int) -> None:
        self.config, self.rank = config, rank
        self.cuda = torch.cuda.is_available()
        self.trace_dir: Path | None = None
        if config.profile:
            if not log_dir:
                raise ConfigError("profile needs log_dir or save: the traces are written there")
            self.trace_dir = Path(log_dir) / "profile"
        self.memory_dir = Path(config.memory_profiling_path or ".")
        self.profilers: list[tuple[Any, Path]] = []  # (torch profiler, where its trace goes)
        self.active = False

    @property
    def enabled(self) -> bool:
        return self.config.profile or self.config.memory_profiling

    def before_step(self, step: int) -> None:
        if not self.enabled or step != self.config.profile_step_start:
            return
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        paths = []  # one profiler (torch runs one at a time), its trace written where asked
        if self.trace_dir is not None:
            paths.append(self.trace_dir / f"trace_rank{self.rank}.json")
        cpu_memory = self.config.memory_profiling and not self.cuda
        if cpu_memory:
            paths.append(self.memory_dir / f"memory_rank{self.rank}.json")
        if self.config.memory_profiling and self.cuda:
            torch.cuda.memory._record_memory_history(max_entries=1_000_000)
        if paths:
            profiler = profile(activities=activities, profile_memory=cpu_memory)
            self.profilers = [(profiler, path) for path in paths]
        if self.profilers:
            self.profilers[0][0].start()
        if self.cuda and self.config.profile:
            torch.cuda.cudart().cudaProfilerStart()
        self.active = True
        log.info(
            "profiling steps %d to %d",
            self.config.profile_step_start,
            self.config.profile_step_stop,
        )

    @contextlib.contextmanager
    def range(self, name: str) -> Iterator[None]:
        """A named range in the trace (and an NVTX range on GPUs) while profiling."""
        if not self.active:
            yield
            return
        if self.cuda:
            torch.cuda.nvtx.range_push(name)
        try:
            with torch.profiler.record_function(name):
                yield
        finally:
            if self.cuda:
                torch.cuda.nvtx.range_pop()

    def after_step(self, step: int) -> None:
        if self.active and step >= self.config.profile_step_stop:
            self.stop()

    def stop(self) -> None:
        """Write what was recorded (also when the run ends inside the window)."""
        if not self.active:
            return
        self.active = False
        if self.cuda and self.config.profile:
            torch.cuda.cudart().cudaProfilerStop()
        if self.profilers:
            self.profilers[0][0].stop()
        for index, (profiler, path) in enumerate(self.profilers):
            path.parent.mkdir(parents=True, exist_ok=True)
            if index == 0:
                profiler.export_chrome_trace(str(path))  # a trace is exported once
            else:
                shutil.copyfile(self.profilers[0][1], path)
            log.info("wrote %s", path)
        self.profilers = []
        if self.config.memory_profiling and self.cuda:
            path = self.memory_dir / f"memory_rank{self.rank}.pickle"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(path))
            torch.cuda.memory._record_memory_history(enabled=None)
            log.info("wrote %s", path)
