"""neox-eval: EleutherAI's lm-evaluation-harness over neox models (`NeoxLM`), `neox-eval`, and
`evaluate_tasks` for evaluation during training."""

from neox_eval.adapter import NeoxLM
from neox_eval.checkpoint import LoadedCheckpoint, load_checkpoint, read_config
from neox_eval.harness import (
    Metrics,
    TaskSelection,
    evaluate_tasks,
    resolve_tasks,
    run_tasks,
    task_metrics,
)

__all__ = [
    "LoadedCheckpoint",
    "Metrics",
    "NeoxLM",
    "TaskSelection",
    "evaluate_tasks",
    "load_checkpoint",
    "read_config",
    "resolve_tasks",
    "run_tasks",
    "task_metrics",
]
__version__ = "0.1.0"
