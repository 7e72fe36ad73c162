"""Import parity: a Hugging Face model imported into neox computes the same logits and greedy
continuation in every tensor/pipeline layout, and exports back to the very same tensors."""

import dataclasses
import json

import pytest
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file
from tokenizers import Tokenizer

from neox_convert import ConversionError, ParallelDims, export_to_hf, import_from_hf
from neox_convert.cli import main
from neox_model import ModelConfig, TPGroup, Transformer, load_model, read_manifest
from neox_testing import hf_model, spawn_ranks

from conftest import VOCAB, cached_greedy, greedy, hf_greedy, random_ids, save_hf

LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2)]


HF_KINDS = ("neox", "llama", "mistral", "llama3", "llama3.2", "qwen2", "qwen3", "olmo2", "gemma2")
KIND_LAYOUTS = [(k, lay) for k in HF_KINDS for lay in LAYOUTS]  # llama3.2, gemma2: tied
LONG = 48  # tokens: past the 16 positions the scaled kinds' rotary was "trained" at


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Each kind saved once (tokenizer of 300 tokens, embedding padded to 384 rows)."""
    root = tmp_path_factory.mktemp("hf")
    models = {kind: hf_model(kind) for kind in HF_KINDS}
    return {kind: (model, save_hf(model, root / kind)) for kind, model in models.items()}


@pytest.mark.parametrize(
    ("kind", "layout"), KIND_LAYOUTS, ids=[f"{k}-tp{t}-pp{p}" for k, (t, p) in KIND_LAYOUTS]
)
def test_import_computes_the_hf_logits_and_continuation(hf_dirs, tmp_path, kind, layout):
    hf, directory = hf_dirs[kind]
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(*layout))
    _, manifest, model = load_model(tmp_path / "run")
    assert manifest.tensor_parallel == layout[0]
    assert any("layer_01" in f.file for f in manifest.files) == (layout[1] > 1)
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.shape[-1] == manifest.padded_vocab >= theirs.shape[-1]
    assert (ours[..., :384] - theirs).abs().max().item() <= 1e-5
    expected = hf_greedy(hf).tolist()
    assert greedy(model, vocab=384).tolist() == expected
    assert cached_greedy(model, vocab=384).tolist() == expected


# config.json keys a round trip gives back as they were
ROUND_TRIP_KEYS = (
    "architectures",
    "vocab_size",
    "intermediate_size",
    "num_key_value_heads",
    "head_dim",
    "rope_parameters",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "layer_types",
    "hidden_activation",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
)


@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_to_neox_to_hf_gives_identical_tensors(hf_dirs, tmp_path, kind):
    """Through a tensor- and pipeline-parallel checkpoint whose vocabulary had to grow; exported
    as the architecture the checkpoint's model calls for."""
    _, directory = hf_dirs[kind]
    layout = ParallelDims(2, 2)
    import_from_hf(directory, tmp_path / "run", layout=layout)
    assert read_manifest(tmp_path / "run" / "global_step0").padded_vocab == 512  # 300 -> x 256
    out = export_to_hf(tmp_path / "run", tmp_path / "back")
    original, back = (
        load_file(directory / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)
    source, exported = (json.loads((d / "config.json").read_text()) for d in (directory, out))
    for key in ROUND_TRIP_KEYS:
        assert source.get(key) == exported.get(key), key


def test_the_test_models_rotary_scaling_is_not_trivial(hf_dirs):
    """Each scaled kind's frequencies (as transformers computes them) differ from unscaled ones,
    and llama3's and yarn's fall in all three of their bands: kept, blended, divided."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for kind in ("llama3", "qwen2", "qwen3", "olmo2", "gemma2"):
        config = hf_dirs[kind][0].config
        rope = config.rope_parameters
        scaled, _ = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, "cpu")
        dim = getattr(config, "head_dim", None) or 16
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        ratio = (scaled / (1.0 / rope["rope_theta"] ** exponents)).tolist()
        factor = rope["factor"]
        kept, divided = ratio.count(1.0), ratio.count(1 / factor)
        assert divided > 0, kind
        if rope["rope_type"] != "linear":  # linear divides every frequency
            assert kept > 0 and kept + divided < len(ratio), (kind, ratio)


def test_the_gemma2_test_models_features_move_its_logits(hf_dirs):
    """Without each of its soft caps, its window on layer 0 or its scale of the scores (that of
    a head 32 wide instead of 1 / sqrt(16)) the Gemma 2 kind computes other logits over 48
    tokens: the import's parity tests would see a feature lost. transformers runs it with its
    eager attention (Gemma 2 does not support SDPA, which cannot soft-cap)."""
    hf = hf_dirs["gemma2"][0]
    assert hf.config._attn_implementation == "eager"
    assert hf.config.layer_types == ["sliding_attention", "full_attention"]
    ids = random_ids(shape=(2, LONG))
    without = {
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "layer_types": ["full_attention"] * 2,
        "query_pre_attn_scalar": 32,
    }
    with torch.no_grad():
        logits = hf(ids).logits
        for key, value in without.items():
            other = hf_model("gemma2", **{key: value})(ids).logits
            assert (other - logits).abs().max().item() > 0.05, key


def test_imported_configs_have_the_hf_features(hf_dirs, tmp_path):
    expected = {
        "llama3": dict(
            no_weight_tying=True,
            rotary_emb_base=500,
            rope_scaling=dict(
                rope_type="llama3",
                factor=4.0,
                low_freq_factor=1.0,
                high_freq_factor=2.0,
                original_max_position_embeddings=16,
            ),
        ),
        "llama3.2": dict(no_weight_tying=False),
        "qwen2": dict(
            qkv_bias=True,
            use_bias_in_attn_linear=False,
            rope_scaling=dict(rope_type="linear", factor=2.0),
            rotary_emb_base=1000000,
        ),
        "qwen3": dict(
            kv_channels=32,
            attention_width=128,
            use_qk_layernorm=True,
            qkv_bias=False,
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
        ),
        "olmo2": dict(
            norm_placement="post",
            use_qk_layernorm=True,
            qk_layernorm_per_head=False,
            rmsnorm_fp32_weight=True,
            num_kv_heads=2,
            qkv_bias=False,
            use_bias_in_mlp=False,
            no_weight_tying=True,
            rms_norm_epsilon=1e-6,
            rotary_emb_base=500000,
            rope_scaling=dict(rope_type="llama3", factor=8.0, original_max_position_embeddings=48),
        ),
        "gemma2": dict(
            norm_placement="sandwich",
            rmsnorm_unit_offset=True,
            scale_embeddings=True,
            kv_channels=32,
            num_kv_heads=2,
            query_pre_attn_scalar=16.0,
            attention_logit_softcapping=0.5,
            final_logit_softcapping=1.0,
            sliding_window_width=7,
            global_attention_every=2,
            activation="geglu_tanh",
            qkv_bias=False,
            use_bias_in_mlp=False,
            no_weight_tying=False,
            rms_norm_epsilon=1e-6,
            rope_scaling=dict(rope_type="linear", factor=2.0),
        ),
    }
    for kind, values in expected.items():
        import_from_hf(hf_dirs[kind][1], tmp_path / kind)
        config = read_manifest(tmp_path / kind / "global_step0").config
        for key, value in values.items():
            got = getattr(config, key)
            if key == "rope_scaling":
                got = {k: v for k, v in dataclasses.asdict(got).items() if k in value}
            assert got == value, (kind, key)


def test_a_qwen_window_on_every_layer_is_neox_sliding_window_width(tmp_path):
    """use_sliding_window with max_window_layers 0 windows every layer: sliding_window - 1."""
    hf = hf_model("qwen3", use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert hf.config.layer_types == ["sliding_attention"] * 2
    directory = save_hf(hf, tmp_path / "hf")
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(2, 1))
    _, manifest, model = load_model(tmp_path / "run")
    assert manifest.config.sliding_window_width == 7
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        assert (model(ids)[..., :384] - hf(ids).logits).abs().max().item() <= 1e-5
    out = export_to_hf(tmp_path / "run", tmp_path / "back", architecture="qwen3")
    exported = json.loads((out / "config.json").read_text())
    assert exported["sliding_window"] == 8 and exported["layer_types"] == hf.config.layer_types


@pytest.mark.parametrize(
    ("layer_types", "width", "every"),
    [
        (["sliding_attention"] * 3, 7, None),
        (["full_attention"] * 3, None, None),
        (["sliding_attention", "sliding_attention", "full_attention"], 7, 3),
    ],
    ids=["every-layer", "none", "every-third-global"],
)
def test_gemma2_windows_on_every_layer_none_or_all_but_every_nth(
    tmp_path, layer_types, width, every
):
    """Gemma2 layer_types neox expresses (sliding_window - 1 wide; global_attention_every n:
    layers n - 1, 2n - 1, ... attend to the whole sequence) import exactly and export back."""
    hf = hf_model("gemma2", num_hidden_layers=3, layer_types=layer_types)
    directory = save_hf(hf, tmp_path / "hf")
    import_from_hf(directory, tmp_path / "run")
    _, manifest, model = load_model(tmp_path / "run")
    config = manifest.config
    assert (config.sliding_window_width, config.global_attention_every) == (width, every)
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        assert (model(ids)[..., :384] - hf(ids).logits).abs().max().item() <= 1e-5
    out = export_to_hf(tmp_path / "run", tmp_path / "back")
    exported = json.loads((out / "config.json").read_text())
    assert exported["layer_types"] == layer_types
    assert exported["sliding_window"] == (8 if width else 64)  # else the whole context


def test_gpt_neox_rotary_scaling_imports_and_exports_exactly(tmp_path):
    """GPTNeoX scales its partial rotary with the same rope_parameters."""
    rope = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    hf = hf_model("neox", rope_parameters=rope)
    directory = save_hf(hf, tmp_path / "hf")
    import_from_hf(directory, tmp_path / "run")
    _, manifest, model = load_model(tmp_path / "run")
    assert manifest.config.rope_scaling.rope_type == "yarn" and manifest.config.rotary_dim == 8
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        assert (model(ids)[..., :384] - hf(ids).logits).abs().max().item() <= 1e-5
    out = export_to_hf(tmp_path / "run", tmp_path / "back")
    exported = json.loads((out / "config.json").read_text())
    assert exported["rope_parameters"] == rope


def test_vocabulary_padding_is_chosen_to_reproduce_the_rows(hf_dirs, tmp_path):
    _, directory = hf_dirs["llama"]
    import_from_hf(directory, tmp_path / "run")
    config = read_manifest(tmp_path / "run" / "global_step0").config
    tokens = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab_size()
    assert 256 < tokens <= VOCAB
    assert (config.vocab_size, config.make_vocab_size_divisible_by) == (tokens, 128)
    assert config.padded_vocab(1) == 384 and config.padded_vocab(2) == 512


def test_without_a_tokenizer_the_embedding_is_the_vocabulary(tmp_path):
    hf = hf_model("llama", vocab_rows=301)
    directory = save_hf(hf, tmp_path / "hf", tokenizer=False)
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(2, 1))
    _, manifest, model = load_model(tmp_path / "run")
    assert (manifest.config.vocab_size, manifest.config.make_vocab_size_divisible_by) == (301, 1)
    assert manifest.padded_vocab == 302  # one zero row so that two ranks split it
    with torch.no_grad():
        assert torch.equal(model.embed_in.weight[301], torch.zeros(64))
        diff = (model(random_ids(301))[..., :301] - hf(random_ids(301)).logits).abs().max()
    assert diff.item() <= 1e-5
    assert not (tmp_path / "run" / "global_step0" / "tokenizer.json").exists()


def test_llama_mlp_width_is_gpt_neox_sizing(hf_dirs, tmp_path):
    _, directory = hf_dirs["llama"]
    import_from_hf(directory, tmp_path / "run")
    config = read_manifest(tmp_path / "run" / "global_step0").config
    assert (config.intermediate_size, config.mlp_multiple_of, config.ffn_size) == (288, 32, 96)
    assert config.num_kv_heads == 2 and config.activation == "swiglu" and config.norm == "rmsnorm"


def test_sharded_safetensors_and_pytorch_bin_inputs(tmp_path):
    hf = hf_model("llama")
    sharded = save_hf(hf, tmp_path / "sharded", max_shard_size="50KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((sharded / "config.json").read_text())
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    names = sorted(state)
    halves = {"pytorch_model-1.bin": names[::2], "pytorch_model-2.bin": names[1::2]}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, binary / file)
    weight_map = {k: file for file, keys in halves.items() for k in keys}
    (binary / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = random_ids()
    for directory in (sharded, binary):
        import_from_hf(directory, tmp_path / f"run-{directory.name}")
        _, _, model = load_model(tmp_path / f"run-{directory.name}")
        with torch.no_grad():
            assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-5


def test_precision_is_applied(hf_dirs, tmp_path):
    _, directory = hf_dirs["mistral"]
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(2, 1), precision="bf16")
    for rank in (0, 1):
        blob = torch.load(tmp_path / "run" / "global_step0" / f"mp_rank_0{rank}_model_states.pt")
        assert {t.dtype for t in blob["module"].values()} == {torch.bfloat16}
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="mistral", precision="fp16")
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float16}


def test_the_run_directory_is_ready_for_fine_tuning(hf_dirs, tmp_path, capsys):
    _, directory = hf_dirs["neox"]
    args = ["from-hf", "--input_dir", str(directory), "--output_dir", str(tmp_path / "run")]
    assert main([*args, "--model_parallel_size", "2", "--pipe_parallel_size", "2"]) == 0
    run = tmp_path / "run"
    assert (run / "latest").read_text().strip() == "global_step0"
    step = run / "global_step0"
    names = sorted(p.name for p in step.iterdir())
    assert names[:3] == ["config.yml", "files.json", "layer_00-model_00-model_states.pt"]
    assert [n for n in names if n.startswith("mp_rank")] == [
        f"mp_rank_0{i}_model_states.pt" for i in range(4)
    ]
    text = (step / "config.yml").read_text()
    assert text.startswith("# neox-convert from-hf") and "no optimizer state" in text
    values = yaml.safe_load(text)
    assert values["finetune"] is True and values["load"] == str(run.resolve())
    assert (values["model_parallel_size"], values["pipe_parallel_size"]) == (2, 2)
    assert values["tokenizer_type"] == "HFTokenizer"
    assert values["vocab_file"] == str(step.resolve() / "tokenizer.json")
    model_keys = {k: v for k, v in values.items() if k in ModelConfig.__dataclass_fields__}
    config = read_manifest(step).config
    assert ModelConfig.from_dict({**model_keys, "vocab_size": config.vocab_size}) == config


LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0] * 8,
    "long_factor": [2.0] * 8,
    "original_max_position_embeddings": 16,
}


def test_bad_inputs_are_one_clear_error_and_nothing_is_written(hf_dirs, tmp_path, capsys):
    mixed = {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}
    cases = {
        "empty": ("llama", {}, "is not a Hugging Face model directory: no config.json"),
        "bert": (
            "llama",
            {"architectures": ["BertForMaskedLM"]},
            "neox imports GPTNeoXForCausalLM",
        ),
        "layers": ("llama", {"num_hidden_layers": 3}, "missing from the weights"),
        "width": ("llama", {"intermediate_size": 128}, "in the model its config describes"),
        "longrope": ("llama", {"rope_parameters": LONGROPE}, "rope_type 'longrope' (neox-model"),
        "dynamic": (
            "llama",
            {"rope_scaling": {"type": "dynamic", "factor": 2.0}},
            "rope_type 'dynamic' (Hugging Face grows the base",
        ),
        "theta": (
            "qwen2",
            {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.5}},
            "rope_theta 10000.5 (neox-model's rotary_emb_base is an integer)",
        ),
        "partial": (
            "llama",
            {"rope_parameters": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5}},
            "partial_rotary_factor 0.5 (Llama rotates whole heads)",
        ),
        "windows": (
            "qwen3",
            {**mixed, "layer_types": ["full_attention", "sliding_attention"]},
            "sliding windows on layers [1] but not on [0] (use_sliding_window with "
            "max_window_layers 1; neox-model windows every layer or none)",
        ),
        "kv_heads": ("llama", {"num_key_value_heads": 4}, "do not fit the config"),
        "gemma2-layer-types": (
            "gemma2",
            {"layer_types": ["full_attention", "sliding_attention"]},
            "neox-model cannot reproduce this Gemma2 model: full attention on layers [0], sliding "
            "on the others (neox-model attends to the whole sequence on every n-th layer alone: "
            "global_attention_every)",
        ),
        "gemma2-window": ("gemma2", {"sliding_window": 1}, "sliding_window 1 (a query that sees"),
        "gemma2-bidirectional": (
            "gemma2",
            {"use_bidirectional_attention": True},
            "use_bidirectional_attention (neox-model's attention is causal)",
        ),
        "gemma2-activation": (
            "gemma2",
            {"hidden_activation": "gelu_new"},
            "hidden_activation 'gelu_new' (neox-model gates with",
        ),
        "olmo2-partial": (
            "olmo2",
            {"rope_parameters": {"rope_theta": 500000.0, "partial_rotary_factor": 0.5}},
            "neox-model cannot reproduce this OLMo2 model: partial_rotary_factor 0.5 (OLMo2 "
            "rotates whole heads)",
        ),
    }
    for name, (kind, change, message) in cases.items():
        good = hf_dirs[kind][1]
        directory = tmp_path / name
        directory.mkdir()
        if name != "empty":
            config = json.loads((good / "config.json").read_text())
            (directory / "config.json").write_text(json.dumps({**config, **change}))
            (directory / "model.safetensors").symlink_to(good / "model.safetensors")
        out = tmp_path / f"out-{name}"
        assert main(["from-hf", "--input_dir", str(directory), "--output_dir", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (name, err)
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_layouts_the_model_cannot_take_are_refused(hf_dirs, tmp_path):
    _, directory = hf_dirs["llama"]
    with pytest.raises(ConversionError, match="cannot split this model over 4 tensor-parallel"):
        import_from_hf(directory, tmp_path / "run", layout=ParallelDims(4, 1))  # 2 kv heads
    with pytest.raises(ConversionError, match="6 pipeline stages for 5 layers"):
        import_from_hf(directory, tmp_path / "run", layout=ParallelDims(1, 6))  # 2 blocks
    assert not (tmp_path / "run").exists()


def test_an_existing_output_is_kept_without_overwrite(hf_dirs, tmp_path):
    _, directory = hf_dirs["llama"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        import_from_hf(directory, tmp_path / "run")
    with pytest.raises(FileExistsError, match="overlaps the input"):
        import_from_hf(directory, directory.parent, overwrite=True)
    with pytest.raises(FileExistsError, match=r"holds keep\.txt, which this conversion does not"):
        import_from_hf(directory, tmp_path / "run", overwrite=True)  # see test_staging.py
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"
    (tmp_path / "run" / "keep.txt").unlink()
    import_from_hf(directory, tmp_path / "run", overwrite=True)
    assert (tmp_path / "run" / "latest").is_file()


def tp_worker(rank, port, run, out):
    """One of two tensor-parallel ranks: a Transformer on a real gloo group, loading its shard."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        manifest = read_manifest(f"{run}/global_step0")
        model = Transformer(manifest.config, tp=TPGroup.of(None))
        blob = torch.load(f"{run}/global_step0/mp_rank_0{rank}_model_states.pt")
        model.load_state_dict(blob["module"])
        with torch.no_grad():
            logits = model.eval()(random_ids(shape=(2, LONG)))
        if rank == 0:
            torch.save(logits, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["llama", "qwen3", "olmo2", "gemma2"])
def test_tensor_parallel_ranks_on_a_real_group_compute_the_hf_logits(hf_dirs, tmp_path, kind):
    """Qwen3: each rank normalises its own query and key heads. OLMo2: each rank holds part of
    the features of the norm over all query heads (and of the one over all key heads), whose
    mean square sums every rank's part. Gemma2: each rank soft-caps its own heads' scores, and
    the tied output's logits are capped on each rank's share of the vocabulary."""
    hf, directory = hf_dirs[kind]
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(2, 1))
    out = tmp_path / "logits.pt"
    spawn_ranks(tp_worker, 2, str(tmp_path / "run"), str(out))
    with torch.no_grad():
        theirs = hf(random_ids(shape=(2, LONG))).logits
    assert (torch.load(out)[..., :384] - theirs).abs().max().item() <= 1e-5
