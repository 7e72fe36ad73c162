"""GPT-NeoX's config files in the shapes it ships them (gpt_neox_configs/, written from its
documented key names): each loads and plans with the parameter count GPT-NeoX's semantics give,
or is refused naming every missing feature at once. Loading and planning only, no training."""

import pytest
from test_gpt_neox_configs import FILES

from neox_train import ConfigError, load_run_config
from neox_train.cli import main as neox_train_cli
from neox_train.planning.plan import make_plan

GPT2_VOCAB, NEOX_VOCAB, LLAMA_VOCAB = 50257, 50277, 32000


def gpt_neox_dense(layers, hidden, vocab, divisible_by=128):
    """GPT-NeoX's dense model, counted from its definition: untied input and output embeddings
    over the padded vocabulary, per layer QKV and output projections, a 4h MLP, two layer norms,
    all with biases; a final layer norm."""
    padded = -(-vocab // divisible_by) * divisible_by
    per_layer = 12 * hidden * hidden + 13 * hidden
    return 2 * padded * hidden + layers * per_layer + 2 * hidden


# Pythia: the "total params" of each EleutherAI/pythia-* model card (14M and 31M, added later,
# from the same definition); the tokenizer's 50277 tokens padded to 128 x model_parallel_size.
PYTHIA = {
    "pythia_14M.yml": 14_067_712,
    "pythia_31M.yml": 30_494_720,
    "pythia_70M.yml": 70_426_624,
    "pythia_160M.yml": 162_322_944,
    "pythia_410M.yml": 405_334_016,
    "pythia_1B.yml": 1_011_781_632,
    "pythia_1.4B.yml": 1_414_647_808,
    "pythia_2.8B.yml": 2_775_208_960,
    "pythia_6.9B.yml": 6_857_302_016,
    "pythia_12B.yml": 11_846_072_320,
}
# GPT-NeoX's example sizes, GPT-2's 50257-token vocabulary padded to 50304
CLASSIC = {
    "19M.yml": (6, 512),
    "49M.yml": (10, 640),
    "125M.yml": (12, 768),
    "350M.yml": (24, 1024),
    "760M.yml": (24, 1536),
    "800M.yml": (16, 2048),
    "1-3B.yml": (24, 2048),
    "2-7B.yml": (32, 2560),
    "6-7B.yml": (32, 4096),
    "13B.yml": (40, 5120),
    "175B.yml": (96, 12288),
}
# Meta's published parameter counts (the Hugging Face checkpoints' totals); GPT-NeoX's Llama 2
# 7B file keeps MLP biases (see test_gpt_neox_configs.py), CodeLlama 7B has 16 more tokens
LLAMA = {
    "llama_7B.yml": (6_738_415_616, LLAMA_VOCAB),
    "llama_13B.yml": (13_015_864_320, LLAMA_VOCAB),
    "llama_30B.yml": (32_528_943_616, LLAMA_VOCAB),
    # 80 x (4 h^2 attention + 3 h 22016 SwiGLU + 2 h norms) + 2 x 32000 h + h, h = 8192
    "llama_65B.yml": (65_285_660_672, LLAMA_VOCAB),
    "llama2_7B.yml": (6_738_415_616 + 32 * (2 * 11008 + 4096), LLAMA_VOCAB),
    "llama2_13B.yml": (13_015_864_320, LLAMA_VOCAB),
    "llama2_70B.yml": (68_976_648_192, LLAMA_VOCAB),
    "codellama_7B.yml": (6_738_546_688, 32016),
    "codellama_34B.yml": (33_743_970_304, LLAMA_VOCAB),
    "mistral_7B.yml": (7_241_732_096, LLAMA_VOCAB),
}


def planned(names, vocab):
    run = load_run_config([FILES / name for name in names]).run
    return make_plan(run, vocab, run.smallest_world_size, None)


@pytest.mark.parametrize(("name", "total"), PYTHIA.items())
def test_pythia_loads_and_plans_with_the_model_card_count(name, total):
    assert planned([name], NEOX_VOCAB).parameters == total


def test_pythia_1b_is_bf16_with_fp32_all_reduce_as_gpt_neox_reads_it():
    run = load_run_config([FILES / "pythia_1B.yml"]).run
    assert (run.precision.dtype, run.precision.communication_dtype) == ("bf16", "fp32")


@pytest.mark.parametrize(("name", "shape"), CLASSIC.items())
def test_the_classic_sizes_load_and_plan(name, shape):
    assert planned([name], GPT2_VOCAB).parameters == gpt_neox_dense(*shape, GPT2_VOCAB)


@pytest.mark.parametrize("training", ["training.yml", "llama_train_config.yml"])
@pytest.mark.parametrize(("name", "counted"), LLAMA.items())
def test_the_llama_family_loads_and_plans_with_a_training_file(name, counted, training):
    """A generic training file, or the one GPT-NeoX ships for them (configs/llama/
    train_config.yml), which fine-tunes and takes the config's schedule on resume."""
    total, vocab = counted
    assert planned([name, training], vocab).parameters == total
    checkpoint = load_run_config([FILES / name, FILES / training]).run.checkpoint
    assert checkpoint.override_lr_scheduler == (training == "llama_train_config.yml")


def test_the_dropless_moe_file_loads_and_plans_every_expert_and_the_active_ones():
    """125M-dmoe: the 125M model with every MLP one of 4 experts (moe_expert_interval 1), one
    per token (moe_top_k 1) chosen by the Sinkhorn router, whose matrix is h x 4."""
    plan = planned(["125M-dmoe.yml"], GPT2_VOCAB)
    dense = gpt_neox_dense(12, 768, GPT2_VOCAB)
    mlp = 8 * 768 * 768 + 5 * 768  # h x 4h and 4h x h with biases
    router = 768 * 4
    assert plan.parameters == dense + 12 * (3 * mlp + router)
    assert plan.active_parameters == dense + 12 * router
    model = plan.config
    assert (model.moe_num_experts, model.moe_top_k, model.moe_router_type) == (4, 1, "sinkhorn")
    assert model.moe_layers == 12


def test_the_20b_finetuning_bf16_and_setup_files_load_and_plan():
    assert planned(["20B.yml"], NEOX_VOCAB).parameters == 20_554_567_680
    finetune = planned(["finetuning_6-9B.yml"], NEOX_VOCAB)
    assert finetune.parameters == PYTHIA["pythia_6.9B.yml"]
    run = load_run_config([FILES / "finetuning_6-9B.yml"]).run
    assert run.checkpoint.finetune and not run.parallel.zero_optimization.load_from_fp32_weights
    bf16 = load_run_config([FILES / "bf16_125M.yml"]).run
    assert (bf16.precision.dtype, bf16.precision.communication_dtype) == ("bf16", "fp32")
    for setup in ("local_setup.yml", "slurm_local.yml", "text_generation.yml"):
        assert planned(["pythia_160M.yml", setup], NEOX_VOCAB).parameters == 162_322_944


def test_the_bnb_and_comet_files_load_and_plan():
    """bnb_125M.yml: GPT-NeoX's 125M with bitsandbytes' 8-bit Adam (fp16, ZeRO stage 0);
    local_setup_comet.yml over 125M.yml: Comet logging with its project, name, tags and others."""
    assert planned(["bnb_125M.yml"], GPT2_VOCAB).parameters == gpt_neox_dense(12, 768, GPT2_VOCAB)
    assert load_run_config([FILES / "bnb_125M.yml"]).run.optimizer.use_bnb_optimizer
    names = ["125M.yml", "local_setup_comet.yml"]
    assert planned(names, GPT2_VOCAB).parameters == gpt_neox_dense(12, 768, GPT2_VOCAB)
    comet = load_run_config([FILES / name for name in names]).run.logging
    assert (comet.use_comet, comet.comet_project, comet.comet_experiment_name) == (
        True,
        "test_project",
        "test_experiment",
    )
    assert comet.comet_tags == ("test_tag1", "test_tag2")
    assert comet.comet_others == {"test_others": None}


def refused(names):
    """The features named by the refusal of these files together, and the number of lines."""
    with pytest.raises(ConfigError) as err:
        load_run_config([FILES / name for name in names])
    lines = str(err.value).splitlines()
    features = {line.split(" for ", 1)[-1].split(", which neox")[0] for line in lines}
    return features, len(lines)


REFUSED = {
    # moe_type deepspeed, moe_token_dropping
    ("125M-moe.yml",): (
        {"DeepSpeed's token-dropping MoE (moe_type deepspeed)"},
        2,
    ),
    ("training.yml", "mamba_130M.yml"): (
        {"Mamba layers", "Mamba's initialisation (single_residual_scaled_normal)"},
        5,
    ),
    ("rwkv_170M.yml",): ({"RWKV layers"}, 1),
    ("1-3B-transformer-engine.yml",): ({"Transformer Engine layers and fp8"}, 2),
    ("125M.yml", "sparse.yml"): (
        {
            "sparse attention",
            "GPT-NeoX's local attention (neox's windowed attention is sliding_window_width)",
        },
        2,
    ),
}


@pytest.mark.parametrize(("names", "expected"), REFUSED.items(), ids=str)
def test_files_for_missing_features_are_refused_naming_all_of_them(names, expected):
    assert refused(names) == expected


@pytest.mark.parametrize(
    ("name", "world_size"),
    [("20B.yml", 8), ("pythia_6.9B.yml", 2), ("pythia_12B.yml", 4)],
)
def test_check_and_plan_use_the_smallest_layout_the_file_allows(name, world_size, capsys):
    """`neox-train check` and `plan` without a world size: pipeline stages x tensor ranks, as
    `neox train` would need at least (the files train on more GPUs with num_gpus or a
    hostfile)."""
    assert neox_train_cli(["check", str(FILES / name)]) == 0
    out = capsys.readouterr().out
    assert "data_parallel=1)" in out and '"train_batch_size"' in out
    assert neox_train_cli(["plan", str(FILES / name), "--gpu-memory", "80"]) == 0
    assert f"layout: {world_size} GPUs" in capsys.readouterr().out


def test_global_num_gpus_is_the_default_world_size(tmp_path, capsys):
    stated = tmp_path / "stated.yml"
    stated.write_text("global_num_gpus: 96\n")
    files = [str(FILES / "20B.yml"), str(stated)]
    assert neox_train_cli(["plan", *files, "--gpu-memory", "80"]) == 0
    assert "layout: 96 GPUs = 4 pipeline stage(s) x 2 tensor-parallel x 12 data-parallel" in (
        capsys.readouterr().out
    )
    assert neox_train_cli(["check", *files, "--world-size", "8"]) == 2
    assert "global_num_gpus is 96 but this run has 8 ranks" in capsys.readouterr().err
