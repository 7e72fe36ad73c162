"""Every key GPT-NeoX defines has a status here (implemented, accepted and ignored, refused
naming its feature, or read under another name), and a config's problems are reported all at
once, one line each."""

import json

import pytest
from test_deepspeed_config import BASE

from neox_train import IGNORED_KEYS, UNSUPPORTED_KEYS, ConfigError, all_keys, load_run_config
from neox_train.config.gpt_neox import FEATURES, GPT_NEOX_KEYS, LEGACY_KEYS
from neox_train.config.key_reference import gpt_neox_status, markdown

from conftest import neox_train

EVERY_KEY = [key for keys in GPT_NEOX_KEYS.values() for key in keys]

DEEPSPEED_MOE = "DeepSpeed's token-dropping MoE (moe_type deepspeed)"


def load(tmp_path, text):
    path = tmp_path / "config.yml"
    path.write_text(BASE + text)
    return load_run_config([path])


def problems(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    return str(err.value).splitlines()


def test_every_gpt_neox_key_has_exactly_one_status():
    assert len(EVERY_KEY) == len(set(EVERY_KEY)) > 330
    homes = set(all_keys())
    for key in EVERY_KEY:
        statuses = [key in homes, key in IGNORED_KEYS, key in UNSUPPORTED_KEYS, key in LEGACY_KEYS]
        assert statuses.count(True) == 1, (key, statuses)
    # no table names a key GPT-NeoX does not define
    assert set(IGNORED_KEYS) | set(UNSUPPORTED_KEYS) | set(LEGACY_KEYS) <= set(EVERY_KEY)


def test_the_reference_lists_every_gpt_neox_key_with_its_status():
    text = markdown()
    for group, keys in GPT_NEOX_KEYS.items():
        for key in keys:
            assert f"| `{key}` | {group} | {gpt_neox_status(key)} |" in text.replace("\\|", "|")
    assert "| `moe_num_experts` | moe | implemented (model) |" in text  # neox's dropless MoE
    assert "| `moe_token_dropping` | moe | refused unless at GPT-NeoX's default: DeepSpeed" in text
    assert "| `fp32_allreduce` | deepspeed_config | implemented (precision) |" in text
    assert "| `override_lr_scheduler` | lr_scheduler | implemented (checkpoint) |" in text


@pytest.mark.parametrize(
    ("text", "feature"),
    [
        ("moe_token_dropping: true\n", "DeepSpeed's token-dropping MoE"),
        ("moe-type: deepspeed\n", "DeepSpeed's token-dropping MoE"),
        ("mamba_inner_func_fusion: true\n", "Mamba layers"),
        ("te_mha: true\n", "Transformer Engine layers and fp8"),
        ("gmlp_attn_dim: 128\n", "gMLP blocks"),
        ("use_mup: true\n", "muP"),
        ("kl_div_beta: 0.2\n", "REINFORCE training"),
    ],
)
def test_a_refused_key_names_the_feature_it_belongs_to(tmp_path, text, feature):
    (line,) = problems(tmp_path, text)
    key = text.split(":")[0].replace("-", "_")
    assert line.startswith(f"{tmp_path / 'config.yml'}: {key} is a GPT-NeoX key for {feature}")
    assert line.endswith("which neox does not support yet; remove it")
    assert "did you mean" not in line


@pytest.mark.parametrize(
    ("text", "feature"),
    [
        ("attention_config: [[[mamba], 2]]\n", "Mamba layers"),
        ("attention_config: [[[rwkv, global], 1]]\n", "RWKV layers"),
        ("attention_config: [[[sparse_fixed], 2]]\n", "sparse attention"),
        ("attention_config: [[[gmlp], 2]]\n", "gMLP blocks"),
        ("norm: te_rmsnorm\n", "Transformer Engine layers and fp8"),
        ("pos_emb: rpe\n", "T5-style relative position buckets"),
        ("optimizer: {type: OneBitAdam, params: {lr: 1.0e-4}}\n", "DeepSpeed's 1-bit Adam"),
        ("optimizer: {type: madgrad_wd, params: {lr: 1.0e-4}}\n", "the MADGRAD optimizer"),
    ],
)
def test_a_value_that_asks_for_a_missing_feature_names_it(tmp_path, text, feature):
    key = text.split(":")[0]
    path = tmp_path / "later.yml"
    path.write_text(text)
    (tmp_path / "config.yml").write_text(BASE)
    with pytest.raises(ConfigError) as err:
        load_run_config([tmp_path / "config.yml", path])
    assert str(err.value).splitlines() == [
        f"{path}: {key} asks for {feature}, which neox does not support yet"
    ]


def test_refused_keys_at_gpt_neox_defaults_leave_their_feature_off(tmp_path):
    """A GPT-NeoX checkpoint's config holds every key, most at their defaults; a switch whose
    default is null is off when false or empty too."""
    defaults = {key: value for feature in FEATURES for key, value in feature.keys.items()}
    text = "".join(f"{key}: {json.dumps(value)}\n" for key, value in defaults.items())
    later = tmp_path / "later.yml"
    later.write_text("use_mup: false\nsparsity_config: {}\niteration: 0\n")
    (tmp_path / "config.yml").write_text(BASE + text)
    loaded = load_run_config([tmp_path / "config.yml", later])
    assert {line.split(":")[0] for line in loaded.ignored} >= set(defaults)
    assert f"moe_type: at GPT-NeoX's default, {DEEPSPEED_MOE} off" in loaded.ignored


def test_every_problem_is_reported_at_once_one_line_each(tmp_path):
    text = (
        "use_mup: true\n"
        "moe_token_dropping: true\n"
        "num_layer: 3\n"
        "te_fp8_mha: true\n"
        "hidden_dropout: lots\n"
        "eval_iters: -1\n"  # a bad value in another section
        "zero_optimization: {stage: 1, elastic: true}\n"
    )
    lines = problems(tmp_path, text)
    where = str(tmp_path / "config.yml")
    assert all(line.startswith(f"{where}: ") for line in lines), lines
    said = [line.removeprefix(f"{where}: ") for line in lines]
    assert said[:4] == [
        "use_mup is a GPT-NeoX key for muP (maximal update parametrization), which neox does "
        "not support yet; remove it",
        f"moe_token_dropping is a GPT-NeoX key for {DEEPSPEED_MOE}, which neox does not "
        "support yet; remove it",
        "unknown key 'num_layer'; did you mean 'num_layers'?",
        "te_fp8_mha is a GPT-NeoX key for Transformer Engine layers and fp8, which neox does "
        "not support yet; remove it",
    ]
    assert "hidden_dropout must be a number, got 'lots'" in said
    assert "eval_iters must be >= 0, got -1" in said
    assert any(s.startswith("unknown key 'zero_optimization.elastic'") for s in said)
    assert len(said) == 7


def test_the_command_line_prints_every_problem_and_exits_2(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(BASE + "use_mup: true\nmoe_token_dropping: true\nnum_layer: 3\n")
    proc = neox_train("check", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert all(line.startswith(f"neox-train: error: {path}: ") for line in lines)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("key", ["no_save_optim", "wandb_run_name", "checkpoint_in_cpu", "te_mha"])
def test_no_suggestion_for_keys_gpt_neox_defines(tmp_path, key):
    (line,) = problems(tmp_path, f"{key}: yes-please\n")
    assert "did you mean" not in line and f"{key} is a GPT-NeoX key for" in line


def test_a_misspelt_key_gets_the_closest_valid_key(tmp_path):
    (line,) = problems(tmp_path, "use-wanb: true\n")
    assert line.endswith("unknown key 'use_wanb'; did you mean 'use_wandb'?")
