import json

from deepspeed.runtime.config import DeepSpeedConfig

from neox_train import load_run_config
from neox_train.engine.deepspeed_config import deepspeed_config, zero_stage

BASE = """
num_layers: 2
hidden_size: 32
num_attention_heads: 4
seq_length: 16
train_iters: 10
optimizer: {type: Adam, params: {lr: 1.0e-3}}
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: 2
"""


def test_default_values_are_written_out(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text(BASE + "zero_optimization: {stage: 1}\n")
    run = load_run_config([path]).run
    config = deepspeed_config(run, run.batch(2))
    assert config["gradient_clipping"] == 1.0  # the GPT-NeoX default, not dropped
    assert config["zero_optimization"]["stage"] == 1
    assert config["fp16"]["enabled"] is False and config["bf16"]["enabled"] is False
    assert (
        config["train_batch_size"],
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
    ) == (16, 4, 2)
    json.dumps(config)  # plain JSON


def test_zero_over_one_fp32_replica_runs_as_stage_0_and_neox_clips(tmp_path):
    """ZeRO 1/2 over one replica partitions nothing: in fp32 the engine runs stage 0 and
    DeepSpeed's clipping is off (neox's GradientGuard clips); bf16 and offload keep ZeRO."""
    cases = {
        "": (1, 0, 0.0),  # stage 0, fp32: neox clips
        "zero_optimization: {stage: 1}": (1, 0, 0.0),
        "zero_optimization: {stage: 2}": (1, 0, 0.0),
        "zero_optimization: {stage: 3}": (1, 3, 1.0),
        "zero_optimization: {stage: 1}\nbf16: {enabled: true}": (1, 1, 1.0),
        "zero_optimization: {stage: 0}\nbf16: {enabled: true}": (1, 0, 1.0),
        "zero_optimization: {stage: 1, cpu_offload: true}\n"
        "optimizer: {type: cpu_adam, params: {lr: 1.0e-3}}": (1, 1, 1.0),
        "zero_optimization: {stage: 2}\ngradient_clipping: 0.5": (2, 2, 0.5),
        "zero_optimization: {stage: 0}\ngradient_clipping: 0.5": (2, 0, 0.0),
    }
    for extra, (replicas, stage, clipping) in cases.items():
        base, case = tmp_path / "a.yml", tmp_path / "case.yml"
        base.write_text(BASE)
        case.write_text(extra + "\n")  # a later file: its keys win (one file may not repeat)
        run = load_run_config([base, case]).run
        config = deepspeed_config(run, run.batch(replicas))
        assert zero_stage(run, replicas) == config["zero_optimization"]["stage"] == stage, extra
        assert config["gradient_clipping"] == clipping, extra


def test_deepspeed_reads_the_same_values(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text(
        BASE + "zero_optimization: {stage: 1, reduce_bucket_size: 5e7}\n"
        "gradient_clipping: 0.5\nbf16: {enabled: true}\n"
    )
    run = load_run_config([path]).run
    parsed = DeepSpeedConfig(deepspeed_config(run, run.batch(1)))
    assert parsed.gradient_clipping == 0.5
    assert parsed.zero_optimization_stage == 1
    assert parsed.zero_config.reduce_bucket_size == 50_000_000
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.train_batch_size == 8


def test_a_sequence_parallel_pipeline_sends_each_ranks_part_whole(tmp_path):
    """DeepSpeed's pipeline sends 1 / tp of a stage's output per tensor rank, which assumes the
    output is the same on every rank; under sequence parallelism each holds its own part."""
    cases = {
        "": True,
        "model_parallel_size: 2\n": True,
        "sequence_parallel: true\n": True,  # at tensor-parallel size 1 it changes nothing
        "model_parallel_size: 2\nsequence_parallel: true\n": False,
    }
    for extra, partitioned in cases.items():
        path = tmp_path / "a.yml"
        path.write_text(BASE + "pipe_parallel_size: 2\nno_weight_tying: true\n" + extra)
        run = load_run_config([path]).run
        config = deepspeed_config(run, run.batch(2 * run.parallel.model_parallel_size))
        want = {"pipe_partitioned": partitioned, "grad_partitioned": partitioned}
        assert config["pipeline"] == want, extra
        parsed = DeepSpeedConfig(config)
        assert parsed.pipeline["pipe_partitioned"] is partitioned, extra
