"""Per-step figures in metrics.jsonl, and MFU from model FLOPs with HFU beside it."""

import pytest
import torch

from neox_model import Transformer
from neox_testing import style
from neox_train.monitoring.flops import no_peak_reason, peak_tflops, step_flops
from neox_train.monitoring.metrics import read_metrics
from neox_train.monitoring.progress import Progress, Throughput

from conftest import run_workers, write_run

STYLES = ("pythia", "llama", "falcon", "learned")  # MHA, GQA, MQA; tied and untied


def matmul_parameters(model: Transformer) -> int:
    """Every parameter but the lookups (the input embedding, learned positions), the output
    layer counted once whether or not it is the input embedding."""
    lookups = {"embed_in.weight", "position_embeddings.weight"}
    counted = sum(p.numel() for n, p in model.named_parameters() if n not in lookups)
    tied = model.embed_out is None
    return counted + (model.embed_in.weight.numel() if tied else 0)


@pytest.mark.parametrize("name", STYLES)
@pytest.mark.parametrize("recompute", [False, True])
def test_model_flops_are_six_n_plus_attention_per_token(name, recompute):
    config = style(name, num_layers=3)
    with torch.device("meta"):
        model = Transformer(config)
    n, tokens = matmul_parameters(model), 4 * config.seq_length
    attention = 12 * config.num_layers * config.seq_length * config.hidden_size
    flops = step_flops(config, 4, model.vocab, recompute=recompute)
    assert flops.model == tokens * (6 * n + attention)
    blocks = sum(p.numel() for p in model.layers.parameters())
    again = tokens * (2 * blocks + attention // 3) if recompute else 0
    assert flops.hardware == flops.model + again
    assert flops.recompute_factor == flops.hardware / flops.model


@pytest.mark.parametrize(
    ("device", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA B200", 2250.0),
        ("AMD Instinct MI300X", 1307.0),
    ],
)
def test_the_peak_follows_the_device_variant(device, peak):
    assert peak_tflops(device, None, "bf16") == peak
    assert peak_tflops(device, None, "fp16") == peak


def test_an_unknown_gpu_or_fp32_reports_no_mfu_and_says_why():
    assert peak_tflops("NVIDIA GeForce RTX 4090", None, "bf16") is None
    assert "'NVIDIA GeForce RTX 4090' is not known" in no_peak_reason(
        "NVIDIA GeForce RTX 4090", "bf16"
    )
    assert peak_tflops("NVIDIA H100 80GB HBM3", None, "fp32") is None
    assert "set peak_tflops" in no_peak_reason("NVIDIA H100 80GB HBM3", "fp32")
    assert peak_tflops("NVIDIA GeForce RTX 4090", 165.0, "bf16") == 165.0  # the key wins
    assert no_peak_reason(None, "fp32") is None  # a CPU run has no MFU to speak of


def test_each_record_has_its_own_step_beside_the_running_average():
    times = iter([0.0, 10.0, 12.0, 13.0])
    throughput = Throughput(
        tokens_per_step=1000,
        samples_per_step=4,
        flops_per_step=4e12,
        devices=2,
        peak_tflops=10.0,
        hardware_flops_per_step=5e12,
    )
    progress = Progress(100, 0, throughput, clock=lambda: next(times))
    first, second, third = progress.rates(5), progress.rates(6), progress.rates(8)
    assert first["step_time_s"] == 2.0 and first["tokens_per_s"] == 500.0
    assert second["step_time_s"] == 2.0 and second["step_tokens_per_s"] == 500.0
    assert third["step_time_s"] == 0.5 and third["step_tokens_per_s"] == 2000.0
    assert third["tokens_per_s"] == pytest.approx(8 * 1000 / 13.0, rel=1e-12)  # since the start
    assert third["step_tflops_per_device"] == 2 * 4e12 / 2 / 1e12
    assert third["step_mfu"] == third["step_tflops_per_device"] / 10.0
    assert third["step_hfu"] / third["step_mfu"] == pytest.approx(5 / 4, rel=1e-12)
    assert third["hfu"] / third["mfu"] == pytest.approx(5 / 4, rel=1e-12)


def test_a_run_logs_per_step_figures_and_hfu_is_mfu_times_the_recompute_factor(data_dir, tmp_path):
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=4,
        checkpoint_activations=True,
        checkpoint_num_layers=1,
        peak_tflops=1.0,  # a CPU has no known peak: give one, for the figures to exist
        log_interval=1,
    )
    run_workers([config], 1)
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train_loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    from neox_train import load_run_config

    run = load_run_config([config]).run
    model = run.model.with_vocab(400)
    flops = step_flops(model, run.batch(1).global_batch, model.padded_vocab(1), recompute=True)
    assert flops.recompute_factor > 1.2
    for record in records:
        assert record["step_time_s"] > 0
        assert record["step_tokens_per_s"] == pytest.approx(
            run.batch(1).global_batch * model.seq_length / record["step_time_s"], rel=1e-9
        )
        assert record["step_hfu"] / record["step_mfu"] == pytest.approx(
            flops.recompute_factor, rel=1e-12
        )
        assert record["hfu"] / record["mfu"] == pytest.approx(flops.recompute_factor, rel=1e-12)
        assert record["step_mfu"] == pytest.approx(
            flops.model / record["step_time_s"] / 1e12, rel=1e-9
        )
