"""eval_tasks in a training config: lm-eval runs at eval_interval and at the end."""

import json

import yaml

from neox_train.monitoring.metrics import read_metrics

from conftest import neox, run_config, write_yaml


def write_task(directory):
    """A small multiple-choice task over local JSONL (no downloads)."""
    directory.mkdir()
    docs = [{"question": f"def f{i}(", "choices": ["x):", "@@@"], "label": 0} for i in range(6)]
    (directory / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = {
        "task": "neox_train_mc",
        "dataset_path": "json",
        "test_split": "test",
        "dataset_kwargs": {
            "data_files": {"test": str(directory / "mc.jsonl")},
            "cache_dir": str(directory / "cache"),
        },
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}],
    }
    (directory / "mc.yaml").write_text(yaml.safe_dump(task))
    return directory / "mc.yaml"


def test_lm_eval_tasks_run_during_training(corpus, tmp_path):
    task = write_task(tmp_path / "tasks")
    config = write_yaml(
        tmp_path / "run.yml",
        run_config(
            corpus,
            tmp_path / "save",
            num_gpus=1,
            train_micro_batch_size_per_gpu=2,
            train_iters=4,
            eval_interval=2,
            eval_tasks=[str(task)],
            eval_tasks_limit=4,
        ),
    )
    result = neox("train", config)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "lm-eval neox_train_mc at step 2: acc" in result.stdout
    records = read_metrics(tmp_path / "save" / "metrics.jsonl")
    steps = [r["step"] for r in records if "eval/neox_train_mc/acc" in r]
    assert steps == [2, 4]
    assert all(
        0.0 <= r["eval/neox_train_mc/acc"] <= 1.0 for r in records if "eval/neox_train_mc/acc" in r
    )
