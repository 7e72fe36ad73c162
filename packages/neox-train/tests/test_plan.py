"""`neox plan`'s numbers against what training actually holds, on CPU.

Model states: neox's real DeepSpeed engine is built for small models on two CPU ranks and one
step is trained; the weights, gradients and optimizer state each rank keeps must equal the plan's
bytes exactly, for fp32 and bf16, ZeRO stages 0, 1 and 2, tensor, pipeline and expert parallelism.
Activations: the tensors a small model saves for its backward pass (counted through autograd's
saved-tensor hooks, each storage once) must be within 2% of the plan's.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neox_model import Transformer
from neox_testing import start_ranks
from neox_train.cli import main
from neox_train.config.run_config import load_run_config
from neox_train.planning.plan import make_plan

from plan_probe import saved_bytes

CPU_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "cpu"
PROBE = Path(__file__).parent / "plan_probe.py"
VOCAB = 512  # the probe's
ACTIVATION_TOLERANCE = 0.02

LAYOUTS = {
    "fp32 ZeRO-0": "precision: fp32\nzero_optimization: {stage: 0}\n",
    "bf16 ZeRO-0": "precision: bfloat16\nzero_optimization: {stage: 0}\n",
    "bf16 ZeRO-1": "precision: bfloat16\nzero_optimization: {stage: 1}\n",
    "fp32 ZeRO-2": "precision: fp32\nzero_optimization: {stage: 2}\n",
    "tensor parallel 2": "model_parallel_size: 2\nzero_optimization: {stage: 1}\n",
    "pipeline 2": "pipe_parallel_size: 2\nzero_optimization: {stage: 1}\n",
    # 4 experts in every other layer, 2 on each expert-parallel rank
    "expert parallel 2": (
        "moe_num_experts: 4\nmoe_top_k: 2\nmoe_router_type: softmax_topk\n"
        "moe_expert_parallel_size: 2\nzero_optimization: {stage: 0}\n"
    ),
    "expert parallel 2, bf16 ZeRO-1": (
        "moe_num_experts: 4\nmoe_top_k: 2\nmoe_expert_parallel_size: 2\n"
        "precision: bfloat16\nzero_optimization: {stage: 1}\n"
    ),
}


def probe(config_sets, world_size=2, *mode):
    """Run plan_probe.py on `world_size` CPU ranks; rank 0's JSON lines, then rank 1's..."""
    command = [sys.executable, PROBE, json.dumps(config_sets), *mode]
    procs = start_ranks(command, world_size, stdout=subprocess.PIPE)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return [json.loads(line) for out in outputs for line in out.splitlines() if line[:1] == "{"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return measure(tmp_path_factory.mktemp("layouts"), LAYOUTS)


def measure(root, cases, *mode):
    """(config files, what each of two ranks reported) of every (base config, case) pair;
    `mode` as `probe` takes it."""
    sets = {}
    for base in ("neox_tiny.yml", "llama_tiny.yml"):
        for name, text in cases.items():
            overlay = root / f"{base}-{name.replace(' ', '_').replace(',', '')}.yml"
            overlay.write_text(text)
            sets[(base, name)] = [str(CPU_CONFIGS / base), str(overlay)]
    by_files = {}
    for result in probe(list(sets.values()), 2, *mode):
        by_files.setdefault(tuple(result["files"]), []).append(result)
    return {key: (files, by_files[tuple(files)]) for key, files in sets.items()}


@pytest.mark.parametrize("base", ["neox_tiny.yml", "llama_tiny.yml"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_model_state_bytes_are_exact(measured, base, layout):
    files, ranks = measured[(base, layout)]
    run = load_run_config(files).run
    plan = make_plan(run, VOCAB, 2, None)
    assert len(ranks) == 2
    for rank in ranks:
        stage = plan.stages[rank["stage"]]
        assert rank["parameters"] == stage.parameters
        assert rank["parameter_bytes"] == stage.states.parameters
        assert rank["optimizer_bytes"] == stage.states.optimizer
        if rank["gradient_bytes"] is not None and run.parallel.zero_optimization.stage == 0:
            assert rank["gradient_bytes"] == stage.states.gradients


ACTIVATION_CASES = {
    "fp32": "precision: fp32\n",
    "bf16": "precision: bfloat16\n",
    "bf16, checkpointed": "precision: bfloat16\ncheckpoint_activations: true\n",
    "fp32, checkpointed": "checkpoint_activations: true\n",
    # Qwen 3's attention: heads twice hidden / heads wide, each query and key head normalised
    "bf16, wide heads, qk norms": "precision: bfloat16\nkv_channels: 32\nuse_qk_layernorm: true\n",
    "fp32, wide heads, qk norms": "kv_channels: 32\nuse_qk_layernorm: true\n",
}
# norms after attention and MLP (OLMo 2), on both sides (Gemma 2): sequential blocks only
PLACEMENT_CASES = {
    "bf16, post norms": "precision: bfloat16\nnorm_placement: post\n",
    "fp32, sandwich norms": "norm_placement: sandwich\n",
    "bf16, sandwich norms, qk norms over all heads": (
        "precision: bfloat16\nnorm_placement: sandwich\nuse_qk_layernorm: true\n"
        "qk_layernorm_per_head: false\n"
    ),
    "fp32, post norms, qk norms over all heads (OLMo 2)": (
        "norm_placement: post\nuse_qk_layernorm: true\nqk_layernorm_per_head: false\n"
    ),
    "bf16, soft-capped attention (Gemma 2)": (
        "precision: bfloat16\nattention_logit_softcapping: 50.0\nkv_channels: 32\n"
        "final_logit_softcapping: 30.0\nnorm_placement: sandwich\nrmsnorm_unit_offset: true\n"
    ),
    "fp32, soft-capped attention (Gemma 2)": "attention_logit_softcapping: 50.0\n",
}


@pytest.mark.parametrize(
    ("base", "case"),
    [(base, case) for base in ("neox_tiny.yml", "llama_tiny.yml") for case in ACTIVATION_CASES]
    + [("llama_tiny.yml", case) for case in PLACEMENT_CASES],
)
def test_activation_bytes_match_the_saved_tensors(tmp_path, base, case):
    overlay = tmp_path / "case.yml"
    overlay.write_text({**ACTIVATION_CASES, **PLACEMENT_CASES}[case])
    run = load_run_config([CPU_CONFIGS / base, overlay]).run
    stage = make_plan(run, VOCAB, 1, None).stages[0]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[run.precision.dtype]
    every = run.training.checkpoint_num_layers if "checkpointed" in case else 0
    model = Transformer(run.model.with_vocab(VOCAB), seed=0, checkpoint_num_layers=every)
    model = model.to(dtype).train()
    micro = run.training.train_micro_batch_size_per_gpu
    ids = torch.randint(0, VOCAB, (micro, run.model.seq_length))
    measured = saved_bytes(model, ids)
    assert abs(stage.saved_activations - measured) <= ACTIVATION_TOLERANCE * measured, (
        stage.saved_activations,
        measured,
    )


SEQUENCE_PARALLEL = "model_parallel_size: 2\nsequence_parallel: true\n"
TENSOR_PARALLEL_CASES = {
    "fp32, sequence parallel": SEQUENCE_PARALLEL,
    "bf16, sequence parallel": SEQUENCE_PARALLEL + "precision: bfloat16\n",
    "bf16, sequence parallel, checkpointed": (
        SEQUENCE_PARALLEL + "precision: bfloat16\ncheckpoint_activations: true\n"
    ),
    "fp32, tensor parallel only": "model_parallel_size: 2\n",
}


@pytest.fixture(scope="module")
def measured_tensor_parallel(tmp_path_factory):
    """Activation bytes each of two tensor-parallel ranks saves, per (base, case)."""
    root = tmp_path_factory.mktemp("tensor_parallel")
    measured = measure(root, TENSOR_PARALLEL_CASES, "activations")
    return {
        key: (files, [r["activation_bytes"] for r in ranks])
        for key, (files, ranks) in measured.items()
    }


@pytest.mark.parametrize("base", ["neox_tiny.yml", "llama_tiny.yml"])
@pytest.mark.parametrize("case", list(TENSOR_PARALLEL_CASES))
def test_tensor_parallel_activation_bytes_match_the_saved_tensors(
    measured_tensor_parallel, base, case
):
    """Under sequence parallelism the norms, dropout and residual stream hold 1 / t of the
    sequence; the plan divides them, and each rank saves what the plan says."""
    files, ranks = measured_tensor_parallel[(base, case)]
    stage = make_plan(load_run_config(files).run, VOCAB, 2, None).stages[0]
    assert len(ranks) == 2
    for measured in ranks:
        assert abs(stage.saved_activations - measured) <= ACTIVATION_TOLERANCE * measured, (
            stage.saved_activations,
            measured,
        )
    if case == "fp32, sequence parallel":
        _, without = measured_tensor_parallel[(base, "fp32, tensor parallel only")]
        assert max(ranks) < 0.9 * min(without)  # the memory it is for


CONFIGS = CPU_CONFIGS.parent


def test_plan_prints_the_layout_batch_compute_and_memory(capsys):
    code = main(
        ["plan", str(CONFIGS / "pythia/160M.yml"), "--num-gpus", "32", "--gpu-memory", "40"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "model: 162,322,944 parameters; vocabulary 50,277 (assumed for HFTokenizer" in out
    assert "32 GPUs = 1 pipeline stage(s) x 1 tensor-parallel x 32 data-parallel" in out
    assert "1024 sequences per step = 32 per GPU x 1 accumulation step(s) x 32 replica(s)" in out
    assert "2,097,152 tokens per step" in out
    assert "fits: " in out and "of 40.00 GiB" in out


def test_plan_says_which_zero_stage_runs(capsys):
    """ZeRO-1 over one fp32 replica runs as stage 0 (nothing to partition), and plan says so."""
    for gpus, line in (
        ("1", "ZeRO stage 0 (zero_optimization.stage 1 over one fp32 replica), fp32"),
        ("2", "x 2 data-parallel; ZeRO stage 1, fp32"),
    ):
        assert main(["plan", str(CPU_CONFIGS / "neox_tiny.yml"), "--num-gpus", gpus]) == 0
        assert line in capsys.readouterr().out


def test_plan_warns_when_a_gpu_is_too_small(capsys):
    args = ["plan", str(CONFIGS / "llama2/70B.yml"), "--num-gpus", "8", "--gpu-memory", "80"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "WARNING: stage 0 needs" in out and "more than the 80.00 GiB available" in out


def test_plan_splits_pipeline_stages_as_deepspeed_does(capsys):
    run = load_run_config([CONFIGS / "20B.yml"]).run
    plan = make_plan(run, 50277, 96, None)
    assert [stage.blocks for stage in plan.stages] == [11, 11, 11, 11]  # type:transformer
    assert [(stage.first, stage.last) for stage in plan.stages] == [
        (True, False),
        (False, False),
        (False, False),
        (False, True),
    ]
    # 1F1B: stage i holds (4 - i) micro-batches' activations (the middle stages are alike)
    assert 2 * plan.stages[1].saved_activations == 3 * plan.stages[2].saved_activations
    assert (
        main(["plan", str(CONFIGS / "20B.yml"), "--num-gpus", "96", "--vocab-size", "50277"]) == 0
    )
    assert "20,554,567,680 parameters" in capsys.readouterr().out


def test_plan_refuses_an_impossible_layout(capsys):
    assert main(["plan", str(CONFIGS / "20B.yml"), "--num-gpus", "12"]) == 2
    assert "world size 12 is not divisible by pipe_parallel_size (4)" in capsys.readouterr().err


def test_plan_predicts_the_speed_gpt_neox_20b_was_measured_at():
    """The default fraction of peak is GPT-NeoX-20B's measured 117 TFLOP/s per A100 with its
    bubble taken out, so planning that run (96 A100s, 4 stages, 32 micro-batches) gives back
    117 TFLOP/s of hardware FLOPs, and MFU is HFU over the recomputation factor."""
    run = load_run_config([CONFIGS / "20B.yml"]).run
    plan = make_plan(run, 50277, 96, None)
    speed = plan.speed
    assert speed.gpu == "A100" and speed.bubble == 3 / 32
    assert speed.hfu * speed.peak_tflops == pytest.approx(117.0, rel=0.01)
    assert speed.hfu / speed.mfu == pytest.approx(plan.flops.recompute_factor)
    assert speed.step_seconds * speed.tokens_per_second == plan.tokens_per_step
    on_h100 = make_plan(run, 50277, 96, None, gpu="NVIDIA H100 80GB HBM3", achievable=0.2)
    assert on_h100.speed.step_seconds == pytest.approx(
        speed.step_seconds * (312 / 989) * (speed.achievable / 0.2)
    )


def test_plan_prints_the_speed_and_refuses_an_unknown_gpu(capsys):
    config = str(CONFIGS / "pythia/160M.yml")
    assert main(["plan", config, "--num-gpus", "32", "--gpu", "H100 PCIe"]) == 0
    out = capsys.readouterr().out
    assert "speed on H100 PCIe (756 TFLOP/s peak) at 41% of peak (GPT-NeoX-20B's measured" in out
    assert main(["plan", config, "--num-gpus", "32", "--gpu", "T4"]) == 2
    assert "--gpu 'T4': no known peak; one of: GH200" in capsys.readouterr().err
    assert main(["plan", config, "--num-gpus", "32", "--achievable", "1.5"]) == 2
    assert "--achievable is a fraction of peak in (0, 1], got 1.5" in capsys.readouterr().err


def test_pick_layout_takes_the_least_model_parallelism_that_fits(capsys):
    """20B on 96 GPUs of 40 GiB: no pipeline (no bubble) and the fewest tensor ranks whose
    fullest GPU fits; with 80 GiB fewer tensor ranks fit; with 8 GiB nothing does."""
    from neox_train.planning.layouts import pick_layout

    run = load_run_config([CONFIGS / "20B.yml"]).run
    picked, plans = pick_layout(run, 50277, 96, 40 * 2**30, 8, "A100", 0.41)
    assert picked is not None and (picked.layout.tensor, picked.layout.pipe) == (4, 1)
    smaller = [p for p in plans if p.layout.pipe == 1 and p.layout.tensor < 4]
    assert smaller and not any(p.fits for p in smaller)  # why 4: 1 and 2 do not fit
    assert all(p.layout.tensor <= 8 and 64 % p.layout.tensor == 0 for p in plans)
    bigger, _ = pick_layout(run, 50277, 96, 80 * 2**30, 8, "A100", 0.41)
    assert bigger is not None and bigger.layout.tensor * bigger.layout.pipe < 4
    none, _ = pick_layout(run, 50277, 96, 8 * 2**30, 8, "A100", 0.41)
    args = ["plan", str(CONFIGS / "20B.yml"), "--num-gpus", "96", "--pick-layout"]
    assert main([*args, "--gpu-memory", "40"]) == 0
    out = capsys.readouterr().out
    assert "picked: model_parallel_size 4, pipe_parallel_size 1 (24 data-parallel" in out
    assert none is None
    assert main([*args, "--gpu-memory", "8"]) == 0
    assert "no layout fits" in capsys.readouterr().out
