"""`from-neox`: checkpoints as GPT-NeoX writes them (built here from the documented layout out of
a random neox model, split over two tensor ranks) import to a model computing the same logits."""

import pytest
import torch
import yaml

from neox_convert import ConversionError, ParallelDims
from neox_convert.cli import main
from neox_convert.fused import split_qkv, split_up_gate
from neox_convert.gpt_neox_checkpoint import import_from_neox, model_config
from neox_model import ModelConfig, Transformer, load_model, read_manifest
from neox_testing import perturb

from conftest import build_tokenizer, random_ids

TP = 2
STYLES = {
    # GPT-NeoX-20B / Pythia: parallel residual (row biases summed over ranks), LayerNorm
    "pythia": (
        dict(pos_emb="rotary", rotary_pct=0.25, gpt_j_residual=True, intermediate_size=128),
        {},
    ),
    # GPT-NeoX's LLaMA: LLaMAParallelMLP (w1 gate, w3 up, w2), RMSNorm "scale", GQA
    "llama": (
        dict(
            pos_emb="rotary",
            norm="rmsnorm",
            use_bias_in_norms=False,
            use_bias_in_attn_linear=False,
            use_bias_in_mlp=False,
            activation="swiglu",
            num_attention_heads=8,
            num_kv_heads=4,  # two groups per rank: GPT-NeoX's [q | k | v] is not neox's order
            intermediate_size=288,
            mlp_multiple_of=32,
        ),
        {"mlp_type": "llama", "activation": "silu"},
    ),
    # newer GPT-NeoX: linear1 holding every rank's [up | gate], sequential residual, biases
    "swiglu": (dict(pos_emb="rotary", activation="swiglu", intermediate_size=288), {}),
}
BASE = dict(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    seq_length=32,
    no_weight_tying=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    vocab_size=287,
    make_vocab_size_divisible_by=128,
)


def reference(style):
    config = ModelConfig(**{**BASE, **STYLES[style][0]})
    torch.manual_seed(1)
    return perturb(Transformer(config, seed=5, padded_vocab=512)).eval()  # 287 -> 128 x 2


def split(full, dim):
    return [t.clone() for t in full.chunk(TP, dim)]


def summed(full):
    """Pieces that add up to `full` (a row-parallel bias under gpt_j_residual)."""
    share = torch.rand_like(full)
    return [full - share, share]


def norm_pieces(pieces, layer, prefix, sd, name, rms):
    weight = "scale" if rms else "weight"
    pieces[(layer, f"{prefix}.{weight}")] = [sd[f"{name}.weight"]] * TP
    if f"{name}.bias" in sd:
        pieces[(layer, f"{prefix}.bias")] = [sd[f"{name}.bias"]] * TP


def mlp_pieces(pieces, model, i, style):
    """GPT-NeoX's MLP tensors (and the attention output bias) of block i, per tensor rank."""
    config, sd, layer, p = model.config, model.state_dict(), i + 2, f"layers.{i}."
    up_gate = sd[p + "mlp.dense_h_to_4h.weight"]
    down = split(sd[p + "mlp.dense_4h_to_h.weight"], 1)
    if style == "llama":
        up, gate = split_up_gate(up_gate)
        pieces[(layer, "mlp.w1.weight")] = split(gate, 0)
        pieces[(layer, "mlp.w3.weight")] = split(up, 0)
        pieces[(layer, "mlp.w2.weight")] = down
    else:
        names = ("dense_h_to_4h", "dense_4h_to_h") if style == "pythia" else ("linear1", "linear2")
        for kind in ("weight", "bias"):
            full = sd[f"{p}mlp.dense_h_to_4h.{kind}"]
            halves = full.chunk(2) if config.gated else (full,)
            per_rank = [torch.cat([split(h, 0)[r] for h in halves]) for r in range(TP)]
            pieces[(layer, f"mlp.{names[0]}.{kind}")] = per_rank
        pieces[(layer, f"mlp.{names[1]}.weight")] = down
        for name, ours in (
            (f"mlp.{names[1]}.bias", "mlp.dense_4h_to_h.bias"),
            ("attention.dense.bias", "attention.dense.bias"),
        ):
            full = sd[p + ours]
            pieces[(layer, name)] = summed(full) if config.gpt_j_residual else [full] * TP


def block_pieces(pieces, model, i, style):
    """GPT-NeoX's tensors of block i, as each tensor rank holds them."""
    config, sd, layer, p = model.config, model.state_dict(), i + 2, f"layers.{i}."
    rms = config.norm == "rmsnorm"
    norm_pieces(pieces, layer, "input_layernorm", sd, p + "input_layernorm", rms)
    norm_pieces(pieces, layer, "post_attention_layernorm", sd, p + "post_attention_layernorm", rms)
    for kind in ("weight", "bias"):
        qkv = sd.get(f"{p}attention.query_key_value.{kind}")
        if qkv is None:
            continue
        if config.kv_heads == config.num_attention_heads:  # per head (heads, 3, head_dim)
            pieces[(layer, f"attention.query_key_value.{kind}")] = split(qkv, 0)
        else:  # every rank's [q | k | v]
            q, k, v = (split(t, 0) for t in split_qkv(qkv, config))
            pieces[(layer, f"attention.query_key_value.{kind}")] = [
                torch.cat(parts) for parts in zip(q, k, v, strict=True)
            ]
    pieces[(layer, "attention.dense.weight")] = split(sd[p + "attention.dense.weight"], 1)
    mlp_pieces(pieces, model, i, style)
    pieces[(layer, "attention.rotary_emb.inv_freq")] = [torch.ones(4)] * TP


def gpt_neox_pieces(model, style):
    """(layer, name) -> the tensor ranks' pieces, GPT-NeoX's layers: 0 embedding, 2.. blocks,
    N+3 final norm, N+4 output."""
    sd, n = model.state_dict(), model.config.num_layers
    pieces = {(0, "word_embeddings.weight"): split(sd["embed_in.weight"], 0)}
    for i in range(n):
        block_pieces(pieces, model, i, style)
    norm_pieces(pieces, n + 3, "norm", sd, "final_layer_norm", model.config.norm == "rmsnorm")
    pieces[(n + 4, "final_linear.weight")] = split(sd["embed_out.weight"], 0)
    return pieces


def write_gpt_neox(model, style, root, pipeline, **config_changes):
    """A GPT-NeoX save directory: latest, global_step7/ with its model files and configs/."""
    step = root / "global_step7"
    (step / "configs").mkdir(parents=True)
    pieces = gpt_neox_pieces(model, style)
    for rank in range(TP):
        if pipeline:
            for layer in sorted({layer for layer, _ in pieces}):
                own = {name: t[rank] for (at, name), t in pieces.items() if at == layer}
                torch.save(own, step / f"layer_{layer:02d}-model_{rank:02d}-model_states.pt")
            module = None
        else:
            module = {f"sequential.{layer}.{name}": t[rank] for (layer, name), t in pieces.items()}
        blob = {"module": module, "args": {"model_parallel_size": TP}, "dp_world_size": 1}
        torch.save(blob, step / f"mp_rank_{rank:02d}_model_states.pt")
    build_tokenizer(root / "tokenizer.json")
    values = {k.replace("_", "-"): v for k, v in model.config.to_dict().items() if v is not None}
    values.pop("vocab-size")
    values.update(STYLES[style][1])
    values.update(
        {"model-parallel-size": TP, "pipe-parallel-size": 1 if pipeline else 0},
        tokenizer_type="HFTokenizer",
        vocab_file=str(root / "tokenizer.json"),
        train_iters=100,  # keys neox does not need are ignored
        optimizer={"type": "Adam", "params": {"lr": 1e-4}},
    )
    values.update(config_changes)
    (step / "configs" / "run.yml").write_text(yaml.safe_dump(values))
    (root / "latest").write_text("global_step7")
    return root


CASES = [
    ("pythia", True, (1, 1)),
    ("pythia", False, (2, 2)),
    ("llama", True, (2, 1)),
    ("swiglu", False, (1, 1)),
]


@pytest.mark.parametrize(
    ("style", "pipeline", "layout"),
    CASES,
    ids=[
        "pythia-pipeline",
        "pythia-sequential-to-tp2-pp2",
        "llama-gqa-pipeline-to-tp2",
        "swiglu-sequential",
    ],
)
def test_gpt_neox_checkpoints_import_to_the_same_model(tmp_path, style, pipeline, layout):
    model = reference(style)
    save = write_gpt_neox(model, style, tmp_path / "save", pipeline)
    import_from_neox(save, tmp_path / "run", layout=ParallelDims(*layout))
    _, manifest, imported = load_model(tmp_path / "run")
    config = manifest.config
    assert (config.vocab_size, config.padded_vocab(1), config.ffn_size) == (
        287,
        512,
        model.config.ffn_size,
    )
    ids = random_ids(287)
    with torch.no_grad():
        assert (imported(ids) - model(ids)).abs().max().item() <= 1e-5


def test_the_written_config_keeps_the_tokenizer_and_gated_activation(tmp_path, capsys):
    save = write_gpt_neox(reference("llama"), "llama", tmp_path / "save", pipeline=True)
    args = [
        "from-neox",
        "--input_dir",
        str(save / "global_step7"),
        "--output_dir",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--config_file", str(save / "global_step7" / "configs" / "run.yml")]) == 0
    step = (tmp_path / "run" / "global_step0").resolve()
    values = yaml.safe_load((step / "config.yml").read_text())
    assert values["activation"] == "swiglu" and values["num_kv_heads"] == 4
    assert values["tokenizer_type"] == "HFTokenizer"
    assert values["vocab_file"] == str(step / "tokenizer.json")
    assert read_manifest(step).tokenizer == "tokenizer.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num-layers": 3}, "has no place in a 3-layer model"),
        ({"num-layers": 1}, "has no place in a 1-layer model"),
        ({"use-qk-layernorm": True}, "use_qk_layernorm True"),  # the helper writes "-" keys
        ({"hidden-size": 48}, "in the model its config describes"),
    ],
)
def test_a_config_that_does_not_fit_the_checkpoint_is_refused(tmp_path, change, message):
    save = write_gpt_neox(reference("pythia"), "pythia", tmp_path / "save", True, **change)
    with pytest.raises(ConversionError, match=message):
        import_from_neox(save, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_directory_without_gpt_neox_files_is_refused(tmp_path, capsys):
    (tmp_path / "step" / "configs").mkdir(parents=True)
    (tmp_path / "step" / "configs" / "a.yml").write_text(yaml.safe_dump(BASE))
    args = ["from-neox", "--input_dir", str(tmp_path / "step"), "--output_dir", str(tmp_path / "o")]
    assert main(args) == 2
    assert "holds no GPT-NeoX model files" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_attention_config_all_and_flash_are_read():
    values = {**BASE, "attention_config": [[["flash"], "all"]], "pos_emb": "rotary"}
    config = model_config(values)  # flash-attn is not installed on the test machines
    assert config.attention_types == ("global", "global")
