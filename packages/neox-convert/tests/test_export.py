"""Export parity: the Hugging Face model built from our files computes what the neox model does."""

import json

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXForCausalLM

from neox_convert import ExportError, export_to_hf
from neox_convert.cli import main
from neox_model.checkpoint import seal_step

from conftest import LLAMA_STYLE, greedy, hf_greedy, make_checkpoint, random_ids


@pytest.mark.parametrize(
    "overrides",
    [
        dict(gpt_j_residual=True, no_weight_tying=True),
        dict(gpt_j_residual=False, no_weight_tying=True, rotary_pct=1.0, rotary_emb_base=500),
        dict(gpt_j_residual=True, no_weight_tying=False, intermediate_size=96),
        dict(activation="relu", use_bias_in_attn_linear=False, rotary_save_freqs_buffer=True),
    ],
)
def test_hf_logits_equal_neox_logits(tmp_path, overrides):
    model = make_checkpoint(tmp_path / "run", **overrides)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf")
    hf, info = GPTNeoXForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
    ids = random_ids()
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - model(ids)).abs().max().item()
    assert diff <= 1e-5


GATED_EXPORTS = {
    "llama-gqa-swiglu": ("llama", LLAMA_STYLE),
    "llama-tied-biases-geglu": (
        "llama",
        {
            **LLAMA_STYLE,
            "no_weight_tying": False,
            "use_bias_in_attn_linear": True,
            "use_bias_in_mlp": True,
            "activation": "geglu",
            "num_kv_heads": 1,
        },
    ),
    "mistral-sliding-window": ("mistral", {**LLAMA_STYLE, "sliding_window_width": 7}),
}


@pytest.mark.parametrize("name", sorted(GATED_EXPORTS))
def test_llama_and_mistral_exports_compute_the_neox_logits_and_continuation(tmp_path, name):
    architecture, overrides = GATED_EXPORTS[name]
    model = make_checkpoint(tmp_path / "run", **overrides)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture=architecture)
    hf, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert (
        type(hf).__name__
        == {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}[architecture]
    )
    assert hf.config.intermediate_size == 96
    ids = random_ids()
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - model(ids)).abs().max().item()
    assert diff <= 1e-5
    assert hf_greedy(hf).tolist() == greedy(model).tolist()


def test_mistral_window_is_one_more_than_neox_width(tmp_path):
    """transformers counts the query itself in `sliding_window`: one less (or no window) would
    compute other logits over a sequence longer than the window."""
    model = make_checkpoint(tmp_path / "run", **LLAMA_STYLE, sliding_window_width=7)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="mistral")
    assert json.loads((out / "config.json").read_text())["sliding_window"] == 8
    ids = random_ids()
    for window in (7, None):
        hf = AutoModelForCausalLM.from_pretrained(out, sliding_window=window).eval()
        with torch.no_grad():
            assert (hf(ids).logits - model(ids)).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    ("architecture", "change", "reason"),
    [
        ("llama", dict(norm="layernorm", use_bias_in_norms=True), "norm 'layernorm'"),
        ("llama", dict(activation="gelu"), "activation 'gelu'"),
        ("llama", dict(rotary_pct=0.5), "rotary_pct 0.5"),
        ("llama", dict(pos_emb="alibi"), "pos_emb 'alibi'"),
        ("llama", dict(gpt_j_residual=True), "gpt_j_residual"),
        ("llama", dict(sliding_window_width=8), "sliding_window_width"),
        ("mistral", dict(use_bias_in_mlp=True), "use_bias_in_attn_linear False, use_bias_in_mlp"),
    ],
)
def test_llama_and_mistral_refuse_what_they_cannot_express(tmp_path, architecture, change, reason):
    make_checkpoint(tmp_path / "run", **{**LLAMA_STYLE, **change})
    family = architecture.capitalize()
    with pytest.raises(
        ExportError, match=f"no exact Hugging Face {family} equivalent for {reason}"
    ):
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture=architecture)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_large_exports_are_sharded_with_an_index(tmp_path):
    model = make_checkpoint(tmp_path / "run", **LLAMA_STYLE)
    out = export_to_hf(
        tmp_path / "run", tmp_path / "hf", architecture="llama", max_shard_bytes=40_000
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (out / "model.safetensors").exists()
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = random_ids()
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() <= 1e-5


def test_tokenizer_and_generation_config_are_exported(tmp_path):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    out = export_to_hf(tmp_path / "run" / "global_step10", tmp_path / "hf")
    ours = Tokenizer.from_file(str(tmp_path / "run" / "global_step10" / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(out)
    assert theirs("def add(x):").input_ids == ours.encode("def add(x):").ids
    assert theirs.eos_token == "<|endoftext|>"
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == ours.token_to_id("<|endoftext|>") == 0
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 384  # padded


def test_precision_is_applied(tmp_path):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", precision="bf16")
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert GPTNeoXForCausalLM.from_pretrained(out).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(pos_emb="learned"), "pos_emb 'learned'"),
        (dict(norm="rmsnorm"), "norm 'rmsnorm'"),
        (dict(activation="swiglu"), "activation 'swiglu'"),
        (dict(num_kv_heads=2), "num_kv_heads 2"),
        (dict(use_bias_in_mlp=False), "use_bias_in_mlp false"),
        (dict(sliding_window_width=8), "sliding_window_width"),
    ],
)
def test_configs_without_an_hf_equivalent_are_refused(tmp_path, change, reason):
    make_checkpoint(tmp_path / "run", **change)
    with pytest.raises(ExportError, match=f"no exact Hugging Face GPTNeoX equivalent for {reason}"):
        export_to_hf(tmp_path / "run", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left


def test_cli_refuses_to_overwrite_and_reports_one_line(tmp_path, capsys):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    args = ["to-hf", "--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "hf")]
    assert main(args) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "hf" / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite"]) == 2  # replaces only a previous output: test_staging.py
    assert "holds keep.txt, which this conversion does not write" in capsys.readouterr().err
    assert (tmp_path / "hf" / "keep.txt").read_text() == "mine"
    (tmp_path / "hf" / "keep.txt").unlink()
    assert main([*args, "--overwrite"]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["to-hf", "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 2
    assert "holds no neox checkpoint" in capsys.readouterr().err


def test_config_file_is_checked_against_the_checkpoint(tmp_path, capsys):
    """GPT-NeoX's --config_file: the run's YAML must describe the checkpoint's model; its
    vocab_file is the tokenizer when the checkpoint holds none."""
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    step = tmp_path / "run" / "global_step10"
    model = dict(num_layers=2, hidden_size=64, num_attention_heads=4, rotary_pct=0.25)
    run = {
        **model,
        "seq-length": 32,
        "train_iters": 100,
        "vocab_file": str(step / "tokenizer.json"),
    }
    good = tmp_path / "run.yml"
    good.write_text(json.dumps(run))  # YAML is a superset of JSON
    args = ["to-hf", "--input_dir", str(step), "--config_file", str(good)]
    assert main([*args, "--output_dir", str(tmp_path / "hf")]) == 0

    wrong = tmp_path / "wrong.yml"
    wrong.write_text(json.dumps({**run, "hidden_size": 128, "rotary_pct": 1.0}))
    assert main([*args, str(wrong), "--output_dir", str(tmp_path / "hf2")]) == 2
    err = capsys.readouterr().err
    assert "does not describe this checkpoint" in err
    assert "hidden_size: 128 in the config, 64 in the checkpoint" in err and "rotary_pct" in err
    assert not (tmp_path / "hf2").exists()

    manifest = json.loads((step / "model.json").read_text())  # a checkpoint without a tokenizer
    (step / "model.json").write_text(json.dumps({**manifest, "tokenizer": None}))
    (step / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    seal_step(step)
    run["vocab_file"] = str(tmp_path / "tokenizer.json")
    good.write_text(json.dumps(run))
    assert main([*args, "--output_dir", str(tmp_path / "hf3")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "hf3")("def f").input_ids
