"""Where metrics go: `metrics.jsonl` always, TensorBoard, Weights & Biases and Comet when asked.

Every writer takes (step, {name: value}); only rank 0 writes. TensorBoard (`tensorboard_dir`,
extra `neox-train[tensorboard]`), wandb (`use_wandb`, extra `neox-train[wandb]`) and Comet
(`use_comet`, extra `neox-train[comet]`) are imported when a run asks for them, and a missing one
is an error naming its extra.

Comet runs online when its own configuration holds an API key (COMET_API_KEY, or its config file)
and COMET_OFFLINE is not true; otherwise it writes an offline archive (a zip of the experiment's
messages, for `comet upload`) into LOG_DIR/comet (log_dir, else save, else the working
directory).
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


# comet_ml's automatic logging off: neox logs its own metrics and config, and nothing else
_COMET_QUIET: dict[str, Any] = dict(
    log_code=False,
    log_graph=False,
    auto_param_logging=False,
    auto_metric_logging=False,
    parse_args=False,
    auto_output_logging=False,
    log_git_metadata=False,
    log_git_patch=False,
    display_summary_level=0,
)


class CometWriter:
    def __init__(
        self, config: LoggingConfig, run_config: dict[str, Any], directory: str | None
    ) -> None:
        try:
            import comet_ml
        except ImportError as err:
            raise ConfigError("use_comet needs comet_ml: pip install 'neox-train[comet]'") from err
        where: dict[str, Any] = dict(
            project_name=config.comet_project, workspace=config.comet_workspace, **_COMET_QUIET
        )
        self.experiment: Any
        if comet_online(comet_ml.get_config()):
            self.experiment = comet_ml.Experiment(**where)
        else:
            offline = Path(directory or ".") / "comet"
            offline.mkdir(parents=True, exist_ok=True)
            # no host details: they are looked up over the network
            self.experiment = comet_ml.OfflineExperiment(
                **where, offline_directory=str(offline), log_env_host=False
            )
        if config.comet_experiment_name:
            self.experiment.set_name(config.comet_experiment_name)
        self.experiment.add_tags(list(config.comet_tags or ()))
        self.experiment.log_others(config.comet_others or {})
        self.experiment.log_parameters(run_config)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.experiment.log_metrics(values, step=step)

    def close(self) -> None:
        self.experiment.end()


def comet_online(comet_config: Any) -> bool:
    """Whether Comet's configuration (environment, config file) sends a run online: an API key
    and COMET_OFFLINE not true."""
    return bool(comet_config["comet.api_key"]) and not comet_config["comet.offline"]


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
    if config.use_comet:
        writers.append(CometWriter(config, run_config, directory))
    return Monitor(writers)
