"""GPT-NeoX's own config files load unchanged, each key landing where it means the same thing."""

import importlib.util
from pathlib import Path

import pytest

from neox_model import count_parameters
from neox_train import ConfigError, check_inputs, load_run_config

FILES = Path(__file__).parent / "gpt_neox_configs"


def load(*names):
    return load_run_config([FILES / name for name in names])


def ignored(loaded):
    return {line.split(":")[0] for line in loaded.ignored}


def test_pythia_160m_with_local_setup():
    loaded = load("pythia_160M.yml", "local_setup.yml")
    run = loaded.run
    assert run.model.attention_types == ("flash",) * 12  # loads without flash-attn installed
    assert (run.model.num_layers, run.model.hidden_size, run.model.rotary_pct) == (12, 768, 0.25)
    assert count_parameters(run.model.with_vocab(50277)) == 162_322_944  # EleutherAI/pythia-160m
    assert run.batch(32).global_batch == 1024  # 32 per GPU on the 32 GPUs it was trained on
    assert run.checkpoint.save_steps(143000) >= {0, 1, 512, 1000, 143000}
    assert (run.data.data_path, run.logging.tensorboard_dir) == (
        "/workspace/enron/enron_text_document",
        "tensorboard",
    )
    assert {"gas", "num_workers", "synchronize_each_layer", "partition_activations"} <= ignored(
        loaded
    )


def test_gpt_neox_20b_and_its_older_save_interval():
    loaded = load("20B.yml")
    run = loaded.run
    assert (run.parallel.pipe_parallel_size, run.parallel.model_parallel_size) == (4, 2)
    assert count_parameters(run.model.with_vocab(50277), 2) == 20_554_567_680
    assert run.batch(96).global_batch == 1536  # 4 x 32 accumulation steps x 12 replicas
    assert run.checkpoint.checkpoint_factor == 500
    assert loaded.rewritten == ("save_interval: read as checkpoint_factor: 500",)
    assert run.optimizer.optimizer.params.lr == pytest.approx(0.97e-4)


# GPT-NeoX's Llama 2 file leaves use_bias_in_mlp at its default, true, and so builds MLP biases
# that Meta's model lacks (GPT-NeoX reads it the same way); configs/llama2/7B.yml sets it false.
LLAMA2_MLP_BIASES = 32 * (2 * 11008 + 4096)


@pytest.mark.parametrize(
    ("model_file", "inner", "bias", "total"),
    [
        ("llama_7B.yml", 11008, False, 6_738_415_616),  # mlp_type llama: 8 * 4096 / 3 to 256
        ("llama2_7B.yml", 11008, True, 6_738_415_616 + LLAMA2_MLP_BIASES),  # swiglu, 32768
        ("mistral_7B.yml", 14336, False, 7_241_732_096),  # mlp_type llama, intermediate_size
    ],
)
def test_llama_family_model_files(model_file, inner, bias, total):
    run = load("training.yml", model_file).run
    model = run.model
    assert (model.activation, model.ffn_size, model.use_bias_in_mlp) == ("swiglu", inner, bias)
    assert count_parameters(model.with_vocab(32000)) == total


def test_the_older_mlp_spelling_reports_what_it_was_read_as():
    loaded = load("training.yml", "mistral_7B.yml")
    assert loaded.rewritten == (
        "mlp_type: read as activation: swiglu, intermediate_size: 43008, mlp_multiple_of: 1, "
        "use_bias_in_mlp: false",
    )
    assert "mlp_type" not in loaded.run.to_yaml_dict()


def test_text_generation_and_slurm_files():
    loaded = load("pythia_160M.yml", "text_generation.yml", "slurm_local.yml")
    gen, log = loaded.run.text_generation, loaded.run.logging
    assert (gen.text_gen_type, gen.maximum_tokens, gen.num_samples) == ("unconditional", 102, 10)
    assert (log.use_wandb, log.wandb_host) == (True, "https://api.wandb.ai")
    assert "checkpoint_validation_with_forward_pass" in ignored(loaded)


def write(tmp_path, text):
    path = tmp_path / "extra.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("save_interval: 7\n", r"save_interval \(7\) and checkpoint_factor \(1000\) disagree"),
        ("mlp_type: moe\n", "mlp_type must be 'regular' or 'llama', got 'moe'"),
        (
            "train_data_paths: [a]\nlabel_data_paths: [b]\ntrain_label_data_paths: [c]\n",
            r"label_data_paths \(\['b'\]\) and train_label_data_paths \(\['c'\]\) disagree",
        ),
        ("mlp_type: llama\nactivation: mish\n", "gates with activation silu, gelu or relu"),
        ("mlp_type: llama\nuse_bias_in_mlp: true\n", "no MLP biases but use_bias_in_mlp is true"),
    ],
)
def test_older_keys_that_cannot_be_read_say_why(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config([FILES / "pythia_160M.yml", write(tmp_path, text)])
    assert str(err.value).startswith(str(tmp_path / "extra.yml"))


def test_the_older_label_data_paths_are_the_train_label_files(tmp_path):
    """GPT-NeoX's preprocess_data_with_mask.py documents label_data_paths beside the
    train_data_paths; today's GPT-NeoX calls it train_label_data_paths."""
    text = "train_data_paths: [data/a, data/b]\nlabel-data-paths: [data/a_label, data/b_label]\n"
    loaded = load_run_config([FILES / "pythia_160M.yml", write(tmp_path, text)])
    assert loaded.run.data.train_label_data_paths == ("data/a_label", "data/b_label")
    assert "label_data_paths: read as train_label_data_paths" in loaded.rewritten[0]


def test_mlp_type_regular_is_the_plain_mlp(tmp_path):
    plain = load_run_config([FILES / "pythia_160M.yml"]).run
    regular = load_run_config([FILES / "pythia_160M.yml", write(tmp_path, "mlp_type: regular\n")])
    assert regular.run == plain


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here"
)
def test_training_refuses_flash_attention_without_flash_attn():
    run = load("pythia_160M.yml", "local_setup.yml").run
    with pytest.raises(ConfigError, match=r"pip install 'neox-model\[flash\]'") as err:
        check_inputs(run)  # before it looks for the token files this machine lacks
    assert "flash-attn is not installed" in str(err.value)


def test_the_post_training_dpo_and_reward_model_files():
    """GPT-NeoX's Llama-3-8B DPO and reward-model configs: the objective, the pairwise files of
    each purpose, and the reward model's score head in place of the output layer."""
    dpo, rm = load("llama3-8b-dpo.yml").run, load("llama3-8b-rm.yml").run
    assert (dpo.objective.train_impl, dpo.objective.dpo_beta, dpo.objective.dpo_fp32) == (
        "dpo",
        0.01,
        True,
    )
    assert (rm.objective.train_impl, rm.model.value_head, dpo.model.value_head) == (
        "rm",
        True,
        False,
    )
    for run, impl in ((dpo, "dpo"), (rm, "rm")):
        assert run.data.dataset_impl == "pairwise" and run.checkpoint.finetune
        stem = f"data/pairwise/llama3_{impl}_val"
        assert run.data.pairwise_paths("valid") == [
            (
                f"{stem}_chosen_document",
                f"{stem}_rejected_document",
                f"{stem}_chosen_label_document",
                f"{stem}_rejected_label_document",
            )
        ]
    assert count_parameters(dpo.model.with_vocab(128256)) == 8_030_261_248  # Llama 3 8B
    # the reward model: no 128,256 x 4096 output layer, one score per position
    assert count_parameters(rm.model.with_vocab(128256)) == 8_030_261_248 - 128256 * 4096 + 4096


def test_the_post_training_kto_file():
    """GPT-NeoX's Llama-3-8B KTO config: documents with label and reward files per purpose."""
    run = load("llama3-8b-kto.yml").run
    objective, data = run.objective, run.data
    assert (objective.train_impl, objective.kto_beta, objective.kto_fp32) == ("kto", 0.1, True)
    assert data.dataset_impl == "gpt2" and data.pack_impl == "unpacked"
    assert data.train_reward_data_paths == ("data/kto/llama3_train_messages_reward_document",)
    assert data.test_reward_data_paths == ("data/kto/llama3_test_messages_reward_document",)
    assert run.optimizer.optimizer.params.lr == 1e-5
