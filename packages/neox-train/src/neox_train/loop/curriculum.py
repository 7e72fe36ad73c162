"""The sequence-length curriculum: how many tokens of each sample a step trains on.

The schedule is DeepSpeed's own `CurriculumScheduler` (GPT-NeoX's configs name its keys), read
as a function of the step alone, so a resumed run continues the schedule where it was.
"""

from __future__ import annotations

import dataclasses

from neox_train.config.schema import ConfigError
from neox_train.config.sections import CurriculumConfig


class SeqlenCurriculum:
    def __init__(self, config: CurriculumConfig, seq_length: int) -> None:
        from deepspeed.runtime.data_pipeline.curriculum_scheduler import CurriculumScheduler

        self.seq_length = seq_length
        try:
            self.scheduler = CurriculumScheduler(dataclasses.asdict(config))
        except (AssertionError, KeyError, ValueError) as err:
            raise ConfigError(f"curriculum_learning: {err or type(err).__name__}") from err

    def seqlen(self, step: int) -> int:
        """Tokens per sample at optimizer step `step` (1-based)."""
        return min(int(self.scheduler.get_difficulty(step)), self.seq_length)
