import json

from deepspeed.runtime.config import DeepSpeedConfig

from neox_train import load_run_config
from neox_train.deepspeed_config import deepspeed_config

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
    path.write_text(BASE)
    run = load_run_config([path]).run
    config = deepspeed_config(run, run.batch(1))
    assert config["gradient_clipping"] == 1.0  # the GPT-NeoX default, not dropped
    assert config["zero_optimization"]["stage"] == 0
    assert config["fp16"]["enabled"] is False and config["bf16"]["enabled"] is False
    assert (
        config["train_batch_size"],
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
    ) == (8, 4, 2)
    json.dumps(config)  # plain JSON


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
