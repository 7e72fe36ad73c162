"""GPT-NeoX's DeepSpeed keys that neox implements: fp32_allreduce, the fp16 / bf16 blocks in
GPT-NeoX's and DeepSpeed's forms, data_types, zero_optimization.load_from_fp32_weights,
global_num_gpus and deepspeed_extra_args: in the DeepSpeed config, in DeepSpeed's engine, and in
a short training run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.config import DeepSpeedConfig
from test_deepspeed_config import BASE

from neox_testing import start_ranks
from neox_train import ConfigError, load_run_config
from neox_train.engine.deepspeed_config import deepspeed_config

from conftest import losses, run_workers, tiny_config, write_config

PROBE = Path(__file__).parent / "engine_probe.py"


def load(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(BASE + text)
    return load_run_config([path]).run


def ds_config(tmp_path, text, world_size=1):
    run = load(tmp_path, text)
    return deepspeed_config(run, run.batch(world_size))


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("fp16: {enabled: true, type: bfloat16, auto_cast: true}\n", "bf16"),  # Pythia 1B
        ("fp16: {fp16: true, enabled: true}\n", "fp16"),
        ("fp16: {fp16: true}\n", "fp16"),
        ("bf16: {bf16: true}\n", "bf16"),
        ("bf16: {enabled: true}\n", "bf16"),
        ("precision: bfloat16\nfp16: {enabled: true, type: bfloat16}\n", "bf16"),
        ("fp16: {enabled: false, type: bfloat16}\n", "fp32"),
    ],
)
def test_the_fp16_and_bf16_blocks_in_gpt_neox_and_deepspeed_forms(tmp_path, text, dtype):
    run = load(tmp_path, text)
    assert run.precision.dtype == dtype
    parsed = DeepSpeedConfig(deepspeed_config(run, run.batch(1)))
    assert parsed.float16_config.enabled is (dtype == "fp16")
    assert parsed.bfloat16_config.enabled is (dtype == "bf16")


def test_fp16_type_bfloat16_against_precision_fp16_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="precision is 'fp16' but bfloat16 is enabled"):
        load(tmp_path, "precision: fp16\nfp16: {enabled: true, type: bfloat16}\n")


def test_fp16_auto_cast_reaches_deepspeed(tmp_path):
    config = ds_config(tmp_path, "fp16: {enabled: true, auto_cast: true}\n")
    assert DeepSpeedConfig(config).float16_config.auto_cast is True


@pytest.mark.parametrize(
    ("text", "reduced_in"),
    [
        ("bf16: {enabled: true}\nfp32_allreduce: true\n", torch.float32),
        ("bf16: {enabled: true}\n", torch.bfloat16),
        ("fp32_allreduce: true\n", torch.float32),
        ("bf16: {enabled: true}\ncommunication_data_type: fp32\n", torch.float32),
        ("fp16: {enabled: true}\n", torch.float16),
    ],
)
def test_fp32_allreduce_is_deepspeeds_communication_data_type(tmp_path, text, reduced_in):
    parsed = DeepSpeedConfig(ds_config(tmp_path, text))
    assert parsed.communication_data_type == reduced_in


def test_fp32_allreduce_and_another_communication_dtype_disagree(tmp_path):
    with pytest.raises(ConfigError, match="fp32_allreduce asks for communication_data_type fp32"):
        load(tmp_path, "fp32_allreduce: true\ncommunication_data_type: bf16\n")


def test_data_types_reach_deepspeed(tmp_path):
    text = "bf16: {enabled: true}\nzero_optimization: {stage: 1}\n"
    config = ds_config(tmp_path, text + "data_types: {grad_accum_dtype: fp32}\n")
    assert config["data_types"] == {"grad_accum_dtype": "fp32"}
    assert DeepSpeedConfig(config).grad_accum_dtype == "fp32"
    assert DeepSpeedConfig(ds_config(tmp_path, text)).grad_accum_dtype is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "bf16: {enabled: true}\ndata_types: {grad_accum_dtype: fp32}\n",
            "grad_accum_dtype fp32 with bf16 training needs zero_optimization.stage 1 or more",
        ),
        (
            "data_types: {grad_accum_dtype: bf16}\nzero_optimization: {stage: 1}\n",
            "grad_accum_dtype bf16 with fp32 training: DeepSpeed accumulates gradients in the "
            "training dtype or in fp32",
        ),
        ("data_types: {grad_accum_dtype: int8}\n", "data_types.grad_accum_dtype must be one of"),
    ],
)
def test_data_types_deepspeed_cannot_run_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_load_from_fp32_weights_reaches_deepspeed(tmp_path):
    text = "bf16: {enabled: true}\nzero_optimization: {stage: 1, load_from_fp32_weights: false}\n"
    config = ds_config(tmp_path, text)
    assert DeepSpeedConfig(config).zero_config.load_from_fp32_weights is False
    default = ds_config(tmp_path, "bf16: {enabled: true}\nzero_optimization: {stage: 1}\n")
    assert DeepSpeedConfig(default).zero_config.load_from_fp32_weights is True


def test_global_num_gpus_must_agree_with_the_world_size(tmp_path):
    run = load(tmp_path, "global_num_gpus: 4\n")
    assert run.batch(4).data_parallel == 4
    with pytest.raises(ConfigError, match="global_num_gpus is 4 but this run has 2 ranks"):
        run.batch(2)


def test_deepspeed_extra_args_are_merged_and_neox_keys_protected(tmp_path):
    extra = "deepspeed_extra_args: {comms_logger: {enabled: true, verbose: false}}\n"
    config = ds_config(tmp_path, extra)
    assert config["comms_logger"] == {"enabled": True, "verbose": False}
    assert DeepSpeedConfig(config).comms_config.comms_logger_enabled
    with pytest.raises(ConfigError, match="deepspeed_extra_args sets pipeline, steps_per_print"):
        ds_config(tmp_path, "deepspeed_extra_args: {steps_per_print: 1, pipeline: {}}\n")


def test_deepspeed_extra_args_may_not_hold_a_key_of_the_run_config(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "deepspeed_extra_args: {gradient_clipping: 0.5, zero_optimization: {}}\n")
    assert str(err.value).splitlines() == [
        f"{tmp_path / 'config.yml'}: deepspeed_extra_args.{key} is a key of the run config, "
        f"which writes it into the DeepSpeed config itself: set {key} at the top level"
        for key in ("gradient_clipping", "zero_optimization")
    ]


def probe(config_sets, world_size):
    """engine_probe.py on `world_size` CPU ranks: rank 0's JSON line per config set."""
    command = [sys.executable, PROBE, json.dumps(config_sets)]
    procs = start_ranks(command, world_size, stdout=subprocess.PIPE)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return [json.loads(line) for line in outputs[0].splitlines() if line[:1] == "{"]


def test_deepspeeds_engine_runs_with_the_keys(tmp_path):
    """bf16 over two ZeRO-1 replicas: fp32_allreduce reduces in fp32, grad_accum_dtype fp32 is
    DeepSpeed's bf16 optimizer, load_from_fp32_weights and deepspeed_extra_args reach it."""
    zero = "bf16: {enabled: true}\nzero_optimization: {stage: 1%s}\n"
    plain = load_path(tmp_path, "plain.yml", zero % "")
    keyed = load_path(
        tmp_path,
        "keys.yml",
        zero % ", load_from_fp32_weights: false"
        + "fp32_allreduce: true\ndata_types: {grad_accum_dtype: fp32}\n"
        + "deepspeed_extra_args: {comms_logger: {enabled: true}}\n",
    )
    before, after = probe([[str(plain)], [str(keyed)]], 2)
    assert before["communication_data_type"] == "torch.bfloat16"
    assert after["communication_data_type"] == "torch.float32"
    assert (before["optimizer"], after["optimizer"]) == ("DeepSpeedZeroOptimizer", "BF16_Optimizer")
    assert (before["load_from_fp32_weights"], after["load_from_fp32_weights"]) == (True, False)
    assert (before["comms_logger"], after["comms_logger"]) == (False, True)


def load_path(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(BASE + text)
    return path


def test_a_pythia_1b_precision_block_trains_on_two_ranks(data_dir, tmp_path):
    """GPT-NeoX's Pythia-1B precision keys, fp32 all-reduce over bf16, as its file has them."""
    values = tiny_config(
        data_dir,
        tmp_path / "run",
        train_micro_batch_size_per_gpu=2,
        fp16={"enabled": True, "type": "bfloat16", "auto_cast": True, "loss_scale": 0},
        fp32_allreduce=True,
        zero_optimization={"stage": 1},
        data_types={"grad_accum_dtype": "fp32"},
    )
    run_workers([write_config(tmp_path / "pythia.yml", values)], 2)
    trained = losses(tmp_path / "run")
    assert trained[max(trained)] < trained[1]
