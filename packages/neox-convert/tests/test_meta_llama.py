"""`from-llama`: Meta's original checkpoints (built here from the documented layout, out of a
random Hugging Face Llama) import to a neox model computing the Hugging Face logits."""

import json

import pytest
import torch
import yaml
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from neox_convert import ConversionError, ParallelDims
from neox_convert.cli import main
from neox_convert.meta_llama import import_from_llama, interleaved_to_half
from neox_model import load_model, read_manifest
from neox_testing import hf_model

from conftest import greedy, hf_greedy, random_ids

# column-parallel rows, row-parallel columns (fairscale's layers in Meta's model.py)
META_DIMS = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "wo": 1, "w2": 1}


def to_interleaved(weight, heads):
    """Hugging Face's rotate-half rows -> Meta's interleaved pairs (the documented inverse of the
    permutation Hugging Face's conversion script applies)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_state(hf):
    """Hugging Face Llama tensors under Meta's names and layout (whole, not yet sharded)."""
    config, sd = hf.config, hf.state_dict()
    state = {
        "tok_embeddings.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "output.weight": sd["lm_head.weight"],
        "rope.freqs": torch.ones(8),
    }
    for i in range(config.num_hidden_layers):
        hf_layer, meta = f"model.layers.{i}.", f"layers.{i}."
        state |= {
            meta + "attention.wq.weight": to_interleaved(
                sd[hf_layer + "self_attn.q_proj.weight"], config.num_attention_heads
            ),
            meta + "attention.wk.weight": to_interleaved(
                sd[hf_layer + "self_attn.k_proj.weight"], config.num_key_value_heads
            ),
            meta + "attention.wv.weight": sd[hf_layer + "self_attn.v_proj.weight"],
            meta + "attention.wo.weight": sd[hf_layer + "self_attn.o_proj.weight"],
            meta + "feed_forward.w1.weight": sd[hf_layer + "mlp.gate_proj.weight"],
            meta + "feed_forward.w2.weight": sd[hf_layer + "mlp.down_proj.weight"],
            meta + "feed_forward.w3.weight": sd[hf_layer + "mlp.up_proj.weight"],
            meta + "attention_norm.weight": sd[hf_layer + "input_layernorm.weight"],
            meta + "ffn_norm.weight": sd[hf_layer + "post_attention_layernorm.weight"],
        }
    return state


def shard_dim(name, embedding_dim):
    if name == "tok_embeddings.weight":
        return embedding_dim
    if name == "output.weight":
        return 0
    return META_DIMS.get(name.split(".")[-2])  # None: every rank holds it whole


def write_meta(hf, directory, shards=2, embedding_dim=1, **params):
    """params.json + consolidated.XX.pth as Meta releases them."""
    directory.mkdir(parents=True)
    config = hf.config
    values = {
        "dim": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "multiple_of": 32,
        "ffn_dim_multiplier": 0.5,  # int(0.5 * int(8 * 64 / 3)) = 85 -> 96
        "norm_eps": config.rms_norm_eps,
        "vocab_size": -1,
    }
    (directory / "params.json").write_text(json.dumps({**values, **params}))
    state = meta_state(hf)
    for rank in range(shards):
        part = {}
        for name, tensor in state.items():
            dim = shard_dim(name, embedding_dim)
            part[name] = tensor if dim is None else tensor.chunk(shards, dim)[rank].clone()
        torch.save(part, directory / f"consolidated.{rank:02d}.pth")
    return directory


@pytest.fixture(scope="module")
def llama():
    return hf_model("llama", rms_norm_eps=1e-5)


@pytest.mark.parametrize(
    ("shards", "embedding_dim", "layout"),
    [(2, 1, (1, 1)), (2, 1, (2, 2)), (1, 1, (2, 1)), (2, 0, (1, 1))],
    ids=["2-shards", "2-shards-to-tp2-pp2", "1-shard-to-tp2", "llama3-embedding-rows"],
)
def test_meta_llama_computes_the_hf_logits(tmp_path, llama, shards, embedding_dim, layout):
    meta = write_meta(llama, tmp_path / "7B", shards, embedding_dim)
    import_from_llama(meta, tmp_path / "run", layout=ParallelDims(*layout), seq_length=64)
    _, manifest, model = load_model(tmp_path / "run")
    assert manifest.config.ffn_size == 96 and manifest.config.num_kv_heads == 2
    ids = random_ids()
    with torch.no_grad():
        assert (model(ids)[..., :384] - llama(ids).logits).abs().max().item() <= 1e-5
    assert greedy(model, vocab=384).tolist() == hf_greedy(llama).tolist()


def meta_rotary(x, base):
    """Meta's rotary: pairs (2i, 2i + 1) as complex numbers turned by position * freq_i."""
    seq, dim = x.shape[-2:]
    freqs = 1.0 / base ** (torch.arange(0, dim, 2).float() / dim)
    turn = torch.polar(torch.ones(seq, dim // 2), torch.outer(torch.arange(seq).float(), freqs))
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], dim // 2, 2))
    return torch.view_as_real(pairs * turn).flatten(-2)


def test_reordered_rows_make_rotate_half_scores_equal_meta_scores():
    """Independent of any model: attention scores of Meta's rotary on its rows equal those of
    rotate-half rotary (transformers' function) on the reordered rows."""
    heads, head_dim, hidden, seq = 2, 8, 16, 6
    generator = torch.Generator().manual_seed(0)
    wq, wk = (torch.randn(heads * head_dim, hidden, generator=generator) for _ in range(2))
    x = torch.randn(seq, hidden, generator=generator)

    def per_head(w):
        return (x @ w.T).reshape(seq, heads, head_dim).transpose(0, 1)  # (heads, seq, head_dim)

    q, k = meta_rotary(per_head(wq), 10000), meta_rotary(per_head(wk), 10000)
    meta_scores = q @ k.transpose(-1, -2)
    freqs = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(seq).float(), freqs).repeat(1, 2)
    q2, k2 = apply_rotary_pos_emb(
        per_head(interleaved_to_half(wq, heads))[None],
        per_head(interleaved_to_half(wk, heads))[None],
        angles.cos()[None],
        angles.sin()[None],
    )
    assert torch.allclose(q2[0] @ k2[0].transpose(-1, -2), meta_scores, atol=1e-4)
    assert not torch.allclose(per_head(wq) @ per_head(wk).transpose(-1, -2), meta_scores, atol=1)


def test_the_tokenizer_beside_the_model_folder_is_copied(tmp_path, llama):
    meta = write_meta(llama, tmp_path / "release" / "7B")
    (tmp_path / "release" / "tokenizer.model").write_bytes(b"sentencepiece model bytes")
    args = ["from-llama", "--input_dir", str(meta), "--output_dir", str(tmp_path / "run")]
    assert main([*args, "--seq_length", "64", "--precision", "bf16"]) == 0
    step = tmp_path / "run" / "global_step0"
    assert (step / "tokenizer.model").read_bytes() == b"sentencepiece model bytes"
    values = yaml.safe_load((step / "config.yml").read_text())
    assert values["tokenizer_type"] == "SPMTokenizer"
    assert values["vocab_file"] == str(step.resolve() / "tokenizer.model")
    assert read_manifest(step).tokenizer == "tokenizer.model"
    module = torch.load(step / "mp_rank_00_model_states.pt")["module"]
    assert {t.dtype for t in module.values()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_layers": 3}, "missing from the weights"),
        ({"ffn_dim_multiplier": None}, "params.json gives an MLP 192 wide but the weights are 96"),
        ({"vocab_size": 32000}, "params.json gives vocab_size 32000"),
        ({"use_scaled_rope": True}, "use_scaled_rope"),
    ],
)
def test_params_that_disagree_with_the_weights_are_refused(tmp_path, llama, params, message):
    meta = write_meta(llama, tmp_path / "7B", **params)
    with pytest.raises(ConversionError, match=message):
        import_from_llama(meta, tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7B"]


def test_a_directory_without_params_is_not_a_meta_checkpoint(tmp_path, capsys):
    args = ["from-llama", "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "run")]
    assert main(args) == 2
    assert "is not a Meta LLaMA checkpoint: no params.json" in capsys.readouterr().err
