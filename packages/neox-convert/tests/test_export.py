"""Export parity: the Hugging Face model built from our files computes what the neox model does."""

import json

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from neox_convert import ExportError, export_to_hf
from neox_convert.cli import main
from neox_model import ModelConfig, ModelManifest, Transformer, WeightFile, write_manifest

TEXT = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int\n    y: int\n"] * 20


def build_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT, trainer)
    tok.save(str(path))
    return tok


def make_checkpoint(root, **overrides):
    """A step directory laid out as neox-train saves one (DeepSpeed's module file + manifest)."""
    values = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        seq_length=32,
        pos_emb="rotary",
        rotary_pct=0.25,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vocab_size=300,
        make_vocab_size_divisible_by=128,
    )
    values.update(overrides)
    config = ModelConfig(**values)
    step = root / "global_step10"
    step.mkdir(parents=True)
    model = Transformer(config, seed=3)
    with torch.no_grad():  # make norms and biases non-trivial so a mix-up would show
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)
    torch.save({"module": model.state_dict(), "ds_config": {}}, step / "mp_rank_00_model_states.pt")
    build_tokenizer(step / "tokenizer.json")
    write_manifest(
        step,
        ModelManifest(
            config,
            (WeightFile("mp_rank_00_model_states.pt", "module"),),
            tokenizer="tokenizer.json",
        ),
    )
    (root / "latest").write_text("global_step10\n")
    return model.eval()


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
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - model(ids)).abs().max().item()
    assert diff <= 1e-4


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
    assert main([*args, "--overwrite"]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert not (tmp_path / "hf" / "keep.txt").exists()


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["to-hf", "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 2
    assert "holds no neox checkpoint" in capsys.readouterr().err
