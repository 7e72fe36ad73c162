"""What a run reports: the progress line, metrics.jsonl, TensorBoard, wandb, parameter norms."""

import json
import os
import re
import zipfile

import pytest

from neox_model import ModelConfig, read_layout
from neox_train.checkpoint.relayout import saved_optimizer_state
from neox_train.monitoring.flops import peak_tflops, step_flops
from neox_train.monitoring.metrics import read_metrics
from neox_train.monitoring.progress import Progress, Throughput

from conftest import (
    neox_train,
    run_side_by_side,
    run_workers,
    tiny_config,
    train_without,
    write_config,
    write_run,
)


def test_flops_reduce_to_six_n_d_for_a_wide_model():
    """For s << 6h and V << 16Lh a step is 6 x (12 L h^2 parameters) x tokens, 8 x with the
    forward recomputed."""
    config = ModelConfig(
        num_layers=96, hidden_size=12288, num_attention_heads=96, seq_length=64, vocab_size=8
    )
    tokens = 4 * 64
    params = 12 * 96 * 12288**2
    flops = step_flops(config, 4, 128, recompute=True)
    assert flops.model == pytest.approx(6 * params * tokens, rel=2e-3)
    assert flops.hardware == pytest.approx(8 * params * tokens, rel=2e-3)
    assert step_flops(config, 4, 128, recompute=False).hardware == flops.model


def test_mfu_needs_a_known_peak():
    assert peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert peak_tflops(None, None) is None
    assert peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_the_progress_line_has_every_figure():
    times = iter([0.0, 10.0, 10.0])
    throughput = Throughput(
        tokens_per_step=1000, samples_per_step=4, flops_per_step=4e12, devices=2, peak_tflops=10.0
    )
    progress = Progress(100, 0, throughput, clock=lambda: next(times))
    values = {
        "train_loss": 2.5,
        "lr": 1e-3,
        "grad_norm": 0.75,
        "loss_scale": 1024.0,
        **progress.rates(20),
    }
    line = progress.line(20, values)
    for part in (
        "step 20/100",
        "loss 2.5000",
        "lr 1.000e-03",
        "grad norm 0.750",
        "loss scale 1024",
        "2,000 tokens/s",
        "8.0 samples/s",
        "4.00 TFLOP/s",
        "MFU 40.0%",
        "GiB",
        "elapsed 0:10",
        "ETA 0:40",
    ):
        assert part in line, (part, line)


def test_tensorboard_wandb_and_parameter_norms(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=3,
        tensorboard_dir=str(tmp_path / "tb"),
        use_wandb=True,
        wandb_project="neox-test",
        log_dir=str(tmp_path / "logs"),
        log_param_norm=True,
        model_parallel_size=2,
    )
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb"), WANDB_SILENT="true")
    try:
        run_workers([config], 2)
    finally:
        for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT"):
            os.environ.pop(key)
    records = read_metrics(tmp_path / "logs" / "metrics.jsonl")
    step3 = next(r for r in records if r["step"] == 3 and "train_loss" in r)
    for key in (
        "grad_norm",
        "param_norm",
        "param_norm/layers.1",
        "tflops_per_device",
        "samples_per_s",
        "memory_gib",
    ):
        assert key in step3, key
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "lr", "grad_norm", "valid_loss", "param_norm"} <= tags
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]
    runs = list((tmp_path / "logs").rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "wandb wrote no offline run"
    logged = wandb_history_keys(runs[0].read_bytes())
    assert {"train_loss", "valid_loss", "param_norm", "grad_norm"} <= logged


def wandb_history_keys(data: bytes) -> set[str]:
    """Keys of the history items in a wandb offline run file: protobuf HistoryItem messages,
    key (field 2, a string) followed by value_json (field 16)."""
    keys = set()
    for match in re.finditer(rb"\x12([\x01-\x7f])", data):
        length = match.group(1)[0]
        end = match.end() + length
        if data[end : end + 2] == b"\x82\x01":
            keys.add(data[match.end() : end].decode("utf-8", "replace"))
    return keys


def test_comet_offline_archive_holds_every_metric_of_metrics_jsonl(data_dir, tmp_path, monkeypatch):
    """use_comet without an API key: comet_ml's OfflineExperiment writes its archive (a zip) into
    LOG_DIR/comet; read back, it holds each value of metrics.jsonl at its step, and the
    experiment's name, tags, other metadata and the run's config."""
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no.comet.config"))  # no key from a file
    monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")  # comet_ml's own error reports
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=3,
        log_dir=str(tmp_path / "logs"),
        use_comet=True,
        comet_project="neox-test",
        comet_experiment_name="tiny",
        comet_tags=["a", "b"],
        comet_others={"note": "offline"},
    )
    run_workers([config], 1)
    archives = list((tmp_path / "logs" / "comet").glob("*.zip"))
    assert len(archives) == 1, "comet_ml wrote no offline archive"
    experiment, messages = comet_archive(archives[0])
    assert experiment["project_name"] == "neox-test" and sorted(experiment["tags"]) == ["a", "b"]
    others = {m["key"]: m["value"] for kind, m in messages if kind == "log_other"}
    assert others["Name"] == "tiny" and others["note"] == "offline"
    params = {  # a list value is a "params" entry
        m.get("param", m.get("params"))["paramName"]
        for kind, m in messages
        if kind == "parameter_msg"
    }
    assert {"hidden_size", "optimizer|params|lr"} <= params
    logged = {
        (m["metric"]["step"], m["metric"]["metricName"]): m["metric"]["metricValue"]
        for kind, m in messages
        if kind == "metric_msg"
    }
    expected = {
        (record["step"], name): value
        for record in read_metrics(tmp_path / "logs" / "metrics.jsonl")
        for name, value in record.items()
        if name != "step"
    }
    assert {(3, "train_loss"), (3, "valid_loss"), (1, "lr")} <= set(expected)
    names = {name for _, name in expected}  # beside them comet_ml's own sys.* metrics
    assert {key: value for key, value in logged.items() if key[1] in names} == expected


def comet_archive(path):
    """(experiment.json, [(message type, payload)]) of a comet_ml offline archive."""
    with zipfile.ZipFile(path) as archive:
        experiment = json.loads(archive.read("experiment.json"))
        lines = archive.read("messages.json").decode().splitlines()
    messages = [(m["type"], m["payload"]) for m in map(json.loads, lines)]
    return experiment, messages


def test_comet_goes_online_only_with_an_api_key_and_without_comet_offline(tmp_path, monkeypatch):
    import comet_ml

    from neox_train.monitoring.writers import comet_online

    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no.comet.config"))
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    monkeypatch.delenv("COMET_OFFLINE", raising=False)
    assert not comet_online(comet_ml.get_config())
    monkeypatch.setenv("COMET_API_KEY", "key")
    assert comet_online(comet_ml.get_config())
    monkeypatch.setenv("COMET_OFFLINE", "true")
    assert not comet_online(comet_ml.get_config())


NORM_LAYOUTS = {
    "single-zero1": (1, {}),
    "tp2-zero1": (2, {"model_parallel_size": 2}),
    "dp2-zero0": (2, {"zero_optimization": {"stage": 0}}),
    "dp2-zero1": (2, {}),  # DeepSpeed's ZeRO computes the gradient norm; the others neox
}


def test_param_grad_and_optimizer_state_norms_are_the_same_in_every_layout(data_dir, tmp_path):
    runs = []
    for name, (processes, extra) in NORM_LAYOUTS.items():
        values = tiny_config(
            data_dir,
            tmp_path / name,
            train_batch_size=4,
            train_micro_batch_size_per_gpu=2,
            train_iters=2,
            log_param_norm=True,
            log_optimizer_states=True,
            **extra,
        )
        runs.append(([write_config(tmp_path / f"{name}.yml", values)], processes))
    run_side_by_side(runs)
    norms = {
        name: [r for r in read_metrics(tmp_path / name / "metrics.jsonl") if "param_norm" in r][-1]
        for name in NORM_LAYOUTS
    }
    single = norms["single-zero1"]
    assert {"optimizer_state_norm/exp_avg", "optimizer_state_norm/exp_avg_sq"} <= set(single)
    for name, logged in norms.items():
        for key, value in single.items():
            if key.startswith(("param_norm", "optimizer_state_norm", "grad_norm")):
                assert logged[key] == pytest.approx(value, rel=1e-5), (name, key)
    # the logged norm is that of the state the checkpoint holds, read back independently
    step_dir = tmp_path / "single-zero1" / "global_step2"
    saved = read_layout(step_dir)
    state = saved_optimizer_state(step_dir, saved, set(saved.ranks[0].names.values()))
    for key in ("exp_avg", "exp_avg_sq"):
        total = sum(float(s[key].double().pow(2).sum()) for s in state.values())
        assert single[f"optimizer_state_norm/{key}"] == pytest.approx(total**0.5, rel=1e-6)


MISSING_EXTRAS = {
    # extra: (the module it installs, keys that need it, the error's start)
    "tensorboard": (
        "torch.utils.tensorboard",
        {"tensorboard_dir": "tb"},
        "tensorboard_dir needs TensorBoard",
    ),
    "comet": ("comet_ml", {"use_comet": True}, "use_comet needs the 'comet' extra"),
}


@pytest.mark.parametrize("extra", sorted(MISSING_EXTRAS))
def test_a_missing_extra_is_one_line_naming_it_before_training(data_dir, tmp_path, extra):
    module, keys, needs = MISSING_EXTRAS[extra]
    config = write_run(data_dir, tmp_path, "run", **keys)
    proc = train_without(config, module)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"neox-train: error: {needs}: pip install 'neox-train[{extra}]'"
    )
    assert "step 1/" not in proc.stdout and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_profiling_writes_a_trace_of_the_chosen_steps(data_dir, tmp_path):
    """profile: a torch profiler trace of steps 2-3 with named ranges; memory_profiling on a CPU:
    a trace with memory events."""
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=4,
        profile=True,
        profile_step_start=2,
        profile_step_stop=3,
        memory_profiling=True,
        memory_profiling_path=str(tmp_path / "memory"),
    )
    out = run_workers([config], 1)
    assert "profiling steps 2 to 3" in out
    trace = json.loads((tmp_path / "run" / "profile" / "trace_rank0.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"step 2", "step 3", "forward", "backward", "optimizer"} <= names
    assert not {"step 1", "step 4"} & names  # only the chosen steps
    memory = json.loads((tmp_path / "memory" / "memory_rank0.json").read_text())
    assert any(e.get("name") == "[memory]" for e in memory["traceEvents"])


def test_profile_steps_are_checked(data_dir, tmp_path):
    values = tiny_config(data_dir, tmp_path / "run", memory_profiling=True)
    proc = neox_train("check", write_config(tmp_path / "c.yml", values), timeout=120)
    assert proc.returncode == 2
    assert "memory_profiling needs memory_profiling_path" in proc.stderr
