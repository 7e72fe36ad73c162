"""Where metrics go: `metrics.jsonl` always, TensorBoard and Weights & Biases when asked.

Every writer takes (step, {name: value}); only rank 0 writes. TensorBoard (`tensorboard_dir`,
extra `neox-train[tensorboard]`) and wandb (`use_wandb`, extra `neox-train[wandb]`) are imported
when a run asks for them, and a missing one is an error naming its extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from neox_train.config.schema import ConfigError
from neox_train.config.sections import LoggingConfig


class Writer(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON object per call: {"step": N, name: value, ...}; a resumed run appends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, step: int, values: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(json.dumps({"step": step, **values}) + "\n")

    def close(self) -> None:
        pass


class TensorBoardWriter:
    def __init__(self, directory: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(
                "tensorboard_dir needs TensorBoard: pip install 'neox-train[tensorboard]'"
            ) from err
        self.writer = SummaryWriter(log_dir=directory)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    def __init__(self, config: LoggingConfig, run_config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ConfigError("use_wandb needs wandb: pip install 'neox-train[wandb]'") from err
        if config.wandb_host:
            wandb.login(host=config.wandb_host, anonymous="allow")
        self.run = wandb.init(
            project=config.wandb_project,
            group=config.wandb_group,
            entity=config.wandb_team,
            config=run_config,
            dir=config.log_dir,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Monitor:
    def __init__(self, writers: list[Writer]) -> None:
        self.writers = writers

    def log(self, step: int, **values: float | None) -> None:
        clean = {k: float(v) for k, v in values.items() if v is not None}
        for writer in self.writers:
            writer.log(step, clean)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def build_monitor(
    config: LoggingConfig, save: str | None, rank: int, run_config: dict[str, Any]
) -> Monitor:
    """Rank 0's writers (none on other ranks): metrics.jsonl in log_dir, else in save."""
    if rank != 0:
        return Monitor([])
    writers: list[Writer] = []
    directory = config.log_dir or save
    if directory:
        writers.append(JsonlWriter(Path(directory) / "metrics.jsonl"))
    if config.tensorboard_dir:
        writers.append(TensorBoardWriter(config.tensorboard_dir))
    if config.use_wandb:
        writers.append(WandbWriter(config, run_config))
    return Monitor(writers)
