"""Export parity: the Hugging Face model built from our files computes what the neox model does."""

import json
import re
import shutil
from functools import partial

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXForCausalLM

import neox_testing
from neox_convert import ARCHITECTURES, ExportError, export_to_hf
from neox_convert.cli import main
from neox_model.checkpoint import seal_step
from neox_testing import TOKENIZER_FAMILIES, style, write_tokenizer_files

from conftest import LLAMA_STYLE, cached_greedy, greedy, hf_greedy, make_checkpoint, random_ids


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


# the rotary scaling of neox_testing's llama3 and qwen3 HF kinds, whose frequencies at these
# bases and head widths test_import checks are scaled in part, not all or none
LLAMA3_ROPE = dict(
    rope_type="llama3",
    factor=4.0,
    low_freq_factor=1.0,
    high_freq_factor=2.0,
    original_max_position_embeddings=16,
)
YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16)
QWEN3_STYLE = {**LLAMA_STYLE, "kv_channels": 32, "use_qk_layernorm": True}
# OLMo 2: norms after attention and MLP, a query norm over all heads and a key norm over all heads
OLMO2_STYLE = {
    **LLAMA_STYLE,
    "norm_placement": "post",
    "use_qk_layernorm": True,
    "qk_layernorm_per_head": False,
    "rmsnorm_fp32_weight": True,
}
# Gemma 2: norms on both sides of attention and MLP scaling by 1 + weight, heads 32 wide with
# scores scaled by 1 / sqrt(16) and soft-capped, a window on every other layer, scaled
# embeddings, GeGLU with tanh, soft-capped logits, a tied output
GEMMA2_STYLE = {
    **LLAMA_STYLE,
    "norm_placement": "sandwich",
    "rmsnorm_unit_offset": True,
    "rms_norm_epsilon": 1e-6,
    "kv_channels": 32,
    "query_pre_attn_scalar": 16,
    "attention_logit_softcapping": 0.5,
    "final_logit_softcapping": 1.0,
    "sliding_window_width": 7,
    "global_attention_every": 2,
    "scale_embeddings": True,
    "activation": "geglu_tanh",
    "no_weight_tying": False,
}
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
    "llama-geglu-tanh": ("llama", {**LLAMA_STYLE, "activation": "geglu_tanh"}),
    "mistral-sliding-window": ("mistral", {**LLAMA_STYLE, "sliding_window_width": 7}),
    "llama3.1-llama3-rope": (
        "llama",
        {**LLAMA_STYLE, "rotary_emb_base": 500, "rope_scaling": LLAMA3_ROPE},
    ),
    "llama3.2-tied-llama3-rope": (
        "llama",
        {
            **LLAMA_STYLE,
            "no_weight_tying": False,
            "rotary_emb_base": 500,
            "rope_scaling": LLAMA3_ROPE,
        },
    ),
    "qwen2-qkv-bias-linear-rope": (
        "qwen2",
        {
            **LLAMA_STYLE,
            "use_bias_in_qkv": True,
            "rotary_emb_base": 1000000,
            "rope_scaling": dict(rope_type="linear", factor=2.0),
        },
    ),
    "qwen2-sliding-window": (
        "qwen2",
        {**LLAMA_STYLE, "use_bias_in_qkv": True, "sliding_window_width": 7},
    ),
    "qwen3-wide-heads-qk-norm-yarn": (
        "qwen3",
        {**QWEN3_STYLE, "rotary_emb_base": 1000000, "rope_scaling": YARN},
    ),
    "qwen3-biases-sliding-window": (
        "qwen3",
        {**QWEN3_STYLE, "use_bias_in_attn_linear": True, "sliding_window_width": 7},
    ),
    "olmo2-post-norms-qk-norm-llama3-rope": (
        "olmo2",
        {**OLMO2_STYLE, "rotary_emb_base": 500, "rope_scaling": LLAMA3_ROPE},
    ),
    "olmo2-wide-heads-biases-tied-yarn": (
        "olmo2",
        {
            **OLMO2_STYLE,
            "kv_channels": 32,
            "use_bias_in_attn_linear": True,
            "no_weight_tying": False,
            "rotary_emb_base": 1000000,
            "rope_scaling": YARN,
        },
    ),
    "gemma2-sandwich-softcaps-alternate-windows": (
        "gemma2",
        {**GEMMA2_STYLE, "rotary_emb_base": 500, "rope_scaling": LLAMA3_ROPE},
    ),
    "gemma2-untied-biases-geglu-no-window-no-caps": (
        "gemma2",
        {
            **GEMMA2_STYLE,
            "no_weight_tying": True,
            "use_bias_in_attn_linear": True,
            "activation": "geglu",
            "kv_channels": None,
            "query_pre_attn_scalar": None,
            "attention_logit_softcapping": None,
            "final_logit_softcapping": None,
            "sliding_window_width": None,
            "global_attention_every": None,
        },
    ),
}
LONG = 48  # tokens: past the 16 positions the scaled models' rotary was "trained" at


@pytest.mark.parametrize("name", sorted(GATED_EXPORTS))
def test_llama_family_exports_compute_the_neox_logits_and_continuation(tmp_path, name):
    architecture, overrides = GATED_EXPORTS[name]
    model = make_checkpoint(tmp_path / "run", **overrides, seq_length=64)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture=architecture)
    hf, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert type(hf).__name__ == ARCHITECTURES[architecture].hf_class
    assert hf.config.intermediate_size == 96
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - model(ids)).abs().max().item()
    assert diff <= 1e-5
    expected = hf_greedy(hf).tolist()
    assert greedy(model).tolist() == expected
    assert cached_greedy(model).tolist() == expected


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


def test_gemma2_window_is_one_more_than_neox_width_on_alternate_layers(tmp_path):
    """transformers counts the query itself in `sliding_window` and windows the layers
    layer_types names: one less, or a window on every layer, computes other logits."""
    model = make_checkpoint(tmp_path / "run", **GEMMA2_STYLE, seq_length=64)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="gemma2")
    values = json.loads((out / "config.json").read_text())
    assert values["sliding_window"] == 8
    assert values["layer_types"] == ["sliding_attention", "full_attention"]
    assert values["query_pre_attn_scalar"] == 16 and values.get("pad_token_id") is None
    ids = random_ids(shape=(2, LONG))
    for change in (dict(sliding_window=7), dict(layer_types=["sliding_attention"] * 2)):
        hf = AutoModelForCausalLM.from_pretrained(out, **change).eval()
        with torch.no_grad():
            assert (hf(ids).logits - model(ids)).abs().max().item() > 1e-3, change


DYNAMIC = dict(rope_type="dynamic", factor=2.0, original_max_position_embeddings=16)


@pytest.mark.parametrize(
    ("architecture", "change", "reason"),
    [
        ("llama", dict(norm="layernorm", use_bias_in_norms=True), "norm 'layernorm'"),
        ("llama", dict(activation="gelu"), "activation 'gelu'"),
        ("llama", dict(rotary_pct=0.5), "rotary_pct 0.5"),
        ("llama", dict(pos_emb="alibi"), "pos_emb 'alibi'"),
        ("llama", dict(gpt_j_residual=True), "gpt_j_residual"),
        (
            "llama",
            dict(sliding_window_width=8),
            "sliding_window_width (Llama attends to the whole sequence); "
            "--architecture mistral reproduces it exactly",
        ),
        (
            "mistral",
            dict(use_bias_in_mlp=True),
            "use_bias_in_qkv False, use_bias_in_attn_linear False, use_bias_in_mlp True "
            "(Mistral has no biases)",
        ),
        (
            "llama",
            dict(use_bias_in_qkv=True),
            "use_bias_in_qkv True with use_bias_in_attn_linear False (Llama's attention_bias is "
            "on q, k, v and o alike); --architecture qwen2 reproduces it exactly",
        ),
        (
            "llama",
            dict(use_qk_layernorm=True),
            "use_qk_layernorm True (Llama has no query/key norms); "
            "--architecture qwen3 reproduces it exactly",
        ),
        (
            "mistral",
            dict(use_qk_layernorm=True, qk_layernorm_per_head=False),
            "use_qk_layernorm True, qk_layernorm_per_head False (Mistral has no query/key norms)",
        ),
        (
            "llama",
            dict(norm_placement="sandwich"),
            "norm_placement 'sandwich' (Llama normalises the inputs of attention and MLP)",
        ),
        (
            "llama",
            OLMO2_STYLE,
            "norm_placement 'post' (Llama normalises the inputs of attention and MLP); "
            "use_qk_layernorm True, qk_layernorm_per_head False (Llama has no query/key norms); "
            "rmsnorm_fp32_weight True (Llama's RMSNorm rounds, then scales by its weight); "
            "--architecture olmo2 reproduces it exactly",
        ),
        (
            "qwen3",
            OLMO2_STYLE,
            "norm_placement 'post' (Qwen3 normalises the inputs of attention and MLP); "
            "qk_layernorm_per_head False (Qwen3 normalises each query and key head); "
            "rmsnorm_fp32_weight True (Qwen3's RMSNorm rounds, then scales by its weight); "
            "--architecture olmo2 reproduces it exactly",
        ),
        (
            "olmo2",
            dict(),
            "norm_placement 'pre' (OLMo2 normalises the outputs of attention and MLP); "
            "use_qk_layernorm False (OLMo2 always normalises all query heads together and all "
            "key heads together); rmsnorm_fp32_weight False (OLMo2's RMSNorm scales by its "
            "weight in float32, then rounds); --architecture llama or mistral reproduces it "
            "exactly",
        ),
        (
            "olmo2",
            {**OLMO2_STYLE, "qk_layernorm_per_head": True},
            "qk_layernorm_per_head True (OLMo2 normalises all query heads together and all key "
            "heads together)",
        ),
        (
            "olmo2",
            {**OLMO2_STYLE, "use_bias_in_qkv": True},
            "use_bias_in_qkv True, use_bias_in_attn_linear False, use_bias_in_mlp False "
            "(OLMo2's attention_bias is on q, k, v and o alike; its MLP has none)",
        ),
        (
            "olmo2",
            {**OLMO2_STYLE, "sliding_window_width": 8},
            "sliding_window_width (OLMo2 attends to the whole sequence)",
        ),
        (
            "mistral",
            dict(rope_scaling=DYNAMIC),
            "rope_scaling dynamic (Hugging Face grows the base past its max_position_embeddings",
        ),
        (
            "qwen2",
            dict(),
            "use_bias_in_qkv False, use_bias_in_attn_linear False, use_bias_in_mlp False "
            "(Qwen2 has biases on q, k and v only); --architecture llama or mistral reproduces "
            "it exactly",
        ),
        (
            "qwen3",
            dict(),
            "use_qk_layernorm False (Qwen3 always normalises each query and key head); "
            "--architecture llama or mistral reproduces it exactly",
        ),
        (
            "llama",
            GEMMA2_STYLE,
            "norm_placement 'sandwich' (Llama normalises the inputs of attention and MLP); "
            "rmsnorm_unit_offset (Llama's RMSNorm scales by its weight, not 1 + it); "
            "query_pre_attn_scalar 16 (Llama scales attention scores by 1 / sqrt of the head "
            "width, 32); attention_logit_softcapping (Llama does not cap attention scores); "
            "final_logit_softcapping (Llama does not cap its logits); scale_embeddings (Llama "
            "does not scale its embeddings); global_attention_every 2 (Llama windows every layer "
            "or none); sliding_window_width (Llama attends to the whole sequence); "
            "--architecture gemma2 reproduces it exactly",
        ),
        (
            "mistral",
            dict(sliding_window_width=7, global_attention_every=2),
            "global_attention_every 2 (Mistral windows every layer or none)",
        ),
        (
            "qwen3",
            dict(use_qk_layernorm=True, attention_logit_softcapping=30.0),
            "attention_logit_softcapping (Qwen3 does not cap attention scores)",
        ),
        (
            "olmo2",
            {**OLMO2_STYLE, "final_logit_softcapping": 30.0},
            "final_logit_softcapping (OLMo2 does not cap its logits)",
        ),
        (
            "qwen2",
            dict(use_bias_in_qkv=True, scale_embeddings=True),
            "scale_embeddings (Qwen2 does not scale its embeddings)",
        ),
        (
            "mistral",
            dict(rmsnorm_unit_offset=True),
            "rmsnorm_unit_offset (Mistral's RMSNorm scales by its weight, not 1 + it)",
        ),
        (
            "llama",
            dict(query_pre_attn_scalar=12),
            "query_pre_attn_scalar 12 (Llama scales attention scores by 1 / sqrt of the head "
            "width, 16)",
        ),
        (
            "gemma2",
            dict(),
            "norm_placement 'pre' (Gemma2 normalises the inputs and outputs of attention and "
            "MLP); rmsnorm_unit_offset False (Gemma2's RMSNorm scales by 1 + weight); "
            "scale_embeddings False (Gemma2 multiplies its embeddings by sqrt(hidden_size)); "
            "--architecture llama or mistral reproduces it exactly",
        ),
        (
            "gemma2",
            {**GEMMA2_STYLE, "use_bias_in_mlp": True},
            "use_bias_in_qkv False, use_bias_in_attn_linear False, use_bias_in_mlp True "
            "(Gemma2's attention_bias is on q, k, v and o alike; its MLP has none)",
        ),
        (
            "gemma2",
            {**GEMMA2_STYLE, "use_qk_layernorm": True},
            "use_qk_layernorm True (Gemma2 has no query/key norms)",
        ),
        (
            "gemma2",
            {**GEMMA2_STYLE, "query_pre_attn_scalar": 12.5},
            "query_pre_attn_scalar 12.5 (Gemma2Config's is an integer)",
        ),
        (
            "gemma2",
            {**GEMMA2_STYLE, "num_attention_heads": 6},
            "hidden_size 64 with num_attention_heads 6 (Gemma2Config requires the heads to "
            "divide hidden_size, whatever their head_dim)",
        ),
        (
            "gemma2",
            {**GEMMA2_STYLE, "rope_scaling": DYNAMIC},
            "rope_scaling dynamic (Hugging Face grows the base",
        ),
        (
            "qwen3",
            dict(use_qk_layernorm=True, use_bias_in_qkv=True),
            "use_bias_in_qkv True, use_bias_in_attn_linear False, use_bias_in_mlp False "
            "(Qwen3's attention_bias is on q, k, v and o alike; its MLP has none)",
        ),
    ],
)
def test_llama_family_refuses_what_it_cannot_express(tmp_path, architecture, change, reason):
    make_checkpoint(tmp_path / "run", **{**LLAMA_STYLE, **change})
    family = ARCHITECTURES[architecture].family
    expected = f"no exact Hugging Face {family} equivalent for {reason}"
    with pytest.raises(ExportError, match=re.escape(expected)):
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture=architecture)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize(
    ("change", "chosen"),
    [
        (
            dict(
                norm="layernorm",
                use_bias_in_norms=True,
                activation="gelu",
                num_kv_heads=None,
                use_bias_in_attn_linear=True,
                use_bias_in_mlp=True,
            ),
            "GPTNeoXForCausalLM",
        ),
        (dict(), "LlamaForCausalLM"),
        (dict(sliding_window_width=7), "MistralForCausalLM"),
        (dict(use_bias_in_qkv=True, sliding_window_width=7), "Qwen2ForCausalLM"),
        (dict(use_qk_layernorm=True), "Qwen3ForCausalLM"),
        (OLMO2_STYLE, "Olmo2ForCausalLM"),
        (GEMMA2_STYLE, "Gemma2ForCausalLM"),
        ({**GEMMA2_STYLE, "final_logit_softcapping": None}, "Gemma2ForCausalLM"),
    ],
)
def test_without_architecture_the_checkpoint_chooses_it(tmp_path, change, chosen):
    make_checkpoint(tmp_path / "run", **{**LLAMA_STYLE, **change})
    args = ["to-hf", "--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "hf")]
    assert main(args) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [chosen]


def test_a_model_no_architecture_reproduces_is_refused_naming_each_reason(tmp_path, capsys):
    make_checkpoint(tmp_path / "run", **{**LLAMA_STYLE, "rope_scaling": DYNAMIC})
    args = ["to-hf", "--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "hf")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Hugging Face architecture reproduces this model exactly" in err[0]
    families = ("GPTNeoX", "Llama", "Mistral", "Qwen2", "Qwen3", "OLMo2", "Gemma2", "Mixtral")
    for family in (*families, "Qwen2MoE"):
        assert f" {family}: " in err[0]
    assert err[0].count("rope_scaling dynamic") == 9
    assert not (tmp_path / "hf").exists()


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


def test_a_llama_3_tokenizer_json_is_exported_as_llama_3s_tokenizer_config_says(tmp_path):
    """A checkpoint holding Llama 3's tokenizer.json alone exports with the bos_token and
    eos_token Llama 3's tokenizer_config.json names (what lm-eval's hf backend conditions an empty
    context on and stops at), their ids in config.json and generation_config.json; transformers
    encodes with the one BOS the file's post-processor adds."""
    files = write_tokenizer_files("llama3", tmp_path / "llama3")
    ours = Tokenizer.from_file(str(files / "tokenizer.json"))
    config = style("llama3", vocab_size=ours.get_vocab_size())
    neox_testing.make_checkpoint(
        tmp_path / "run", config, partial(shutil.copyfile, files / "tokenizer.json")
    )
    out = export_to_hf(tmp_path / "run", tmp_path / "hf")
    family = TOKENIZER_FAMILIES["llama3"].config
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert (saved["bos_token"], saved["eos_token"]) == (family["bos_token"], family["eos_token"])
    theirs = AutoTokenizer.from_pretrained(out)
    bos, eos = ours.token_to_id("<|begin_of_text|>"), ours.token_to_id("<|end_of_text|>")
    assert (theirs.bos_token_id, theirs.eos_token_id) == (bos, eos)
    encoded = theirs.encode("the cat")
    assert encoded == ours.encode("the cat").ids
    assert encoded[0] == bos and bos not in encoded[1:]
    for name in ("config.json", "generation_config.json"):
        values = json.loads((out / name).read_text())
        assert (values["bos_token_id"], values["eos_token_id"]) == (bos, eos), name


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
        (dict(kv_channels=32), "kv_channels 32"),
        (dict(use_bias_in_qkv=False), "use_bias_in_qkv False with use_bias_in_attn_linear True"),
        (dict(use_qk_layernorm=True), "use_qk_layernorm"),
        (dict(norm_placement="post"), "norm_placement 'post'"),
        (dict(rope_scaling=DYNAMIC), "rope_scaling dynamic"),
        (dict(final_logit_softcapping=30.0), "final_logit_softcapping"),
        (dict(attention_logit_softcapping=50.0), "attention_logit_softcapping"),
        (dict(scale_embeddings=True), "scale_embeddings"),
        (dict(query_pre_attn_scalar=12), "query_pre_attn_scalar 12"),
    ],
)
def test_configs_without_an_hf_equivalent_are_refused(tmp_path, change, reason):
    make_checkpoint(tmp_path / "run", **change)
    with pytest.raises(ExportError, match=f"no exact Hugging Face GPTNeoX equivalent for {reason}"):
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="neox")
    assert not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left


def test_gpt_neox_refuses_olmo_2s_norms_naming_them_and_olmo2(tmp_path):
    make_checkpoint(tmp_path / "run", **OLMO2_STYLE)
    with pytest.raises(ExportError) as refused:
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="neox")
    message = str(refused.value)
    assert "use_qk_layernorm (GPTNeoX has no query/key norms)" in message
    assert "norm_placement 'post' (GPTNeoX normalises the inputs of attention and MLP)" in message
    assert message.endswith("; --architecture olmo2 reproduces it exactly")


def test_gpt_neox_refuses_gemma_2s_features_naming_them_and_gemma2(tmp_path):
    make_checkpoint(tmp_path / "run", **GEMMA2_STYLE)
    with pytest.raises(ExportError) as refused:
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="neox")
    message = str(refused.value)
    for feature in (
        "norm_placement 'sandwich'",
        "rmsnorm_unit_offset",
        "query_pre_attn_scalar 16",
        "attention_logit_softcapping",
        "final_logit_softcapping",
        "scale_embeddings",
        "global_attention_every 2",
    ):
        assert f"; {feature} (GPTNeoX" in message, feature
    assert message.endswith("; --architecture gemma2 reproduces it exactly")


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


def test_config_file_with_the_new_keys_is_checked_against_the_checkpoint(tmp_path, capsys):
    """neox's own use_qk_layernorm (per head, unlike GPT-NeoX's), kv_channels and a nested
    rope_scaling in the run's YAML are compared with the checkpoint's."""
    make_checkpoint(tmp_path / "run", **QWEN3_STYLE, rope_scaling=YARN)
    model = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32)
    good = {
        **model,
        "pos_emb": "rotary",
        "kv_channels": 32,
        "use_qk_layernorm": True,
        "rope_scaling": YARN,
    }
    args = ["to-hf", "--input_dir", str(tmp_path / "run"), "--config_file"]
    for name, values in {"good": good, "bad": {**good, "rope_scaling": LLAMA3_ROPE}}.items():
        (tmp_path / f"{name}.yml").write_text(json.dumps(values))
        code = main([*args, str(tmp_path / f"{name}.yml"), "--output_dir", str(tmp_path / name)])
        assert code == {"good": 0, "bad": 2}[name]
    assert "rope_scaling: RopeScaling(rope_type='llama3'" in capsys.readouterr().err
    assert json.loads((tmp_path / "good" / "config.json").read_text())["head_dim"] == 32


@pytest.mark.parametrize(
    ("architecture", "overrides", "hf_class"),
    [
        (
            "neox",
            dict(gpt_j_residual=True, no_weight_tying=True),
            "GPTNeoXForSequenceClassification",
        ),
        ("neox", dict(no_weight_tying=False), "GPTNeoXForSequenceClassification"),
        ("llama", LLAMA_STYLE, "LlamaForSequenceClassification"),
        ("mistral", dict(LLAMA_STYLE, sliding_window_width=5), "MistralForSequenceClassification"),
    ],
)
def test_a_reward_model_exports_as_sequence_classification_with_equal_scores(
    tmp_path, architecture, overrides, hf_class
):
    """A value-head model (train_impl rm) becomes the family's ...ForSequenceClassification with
    one label: its score at every position is ours, and the score transformers pools (at the
    last token) is our last position's."""
    import transformers

    model = make_checkpoint(tmp_path / "run", value_head=True, **overrides)
    out = export_to_hf(tmp_path / "run", tmp_path / "hf", architecture=architecture)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [hf_class] and len(config["id2label"]) == 1
    assert not (out / "generation_config.json").exists()
    hf, info = getattr(transformers, hf_class).from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
    ids = random_ids()
    with torch.no_grad():
        ours = model(ids)
        hidden = hf.eval().base_model(ids).last_hidden_state
        per_position = hf.score(hidden).squeeze(-1)
        pooled = hf(ids).logits.squeeze(-1)
    assert (per_position - ours).abs().max().item() <= 1e-5
    assert (pooled - ours[:, -1]).abs().max().item() <= 1e-5


def test_a_reward_model_is_not_exported_as_a_family_without_sequence_classification(tmp_path):
    make_checkpoint(tmp_path / "run", value_head=True, **LLAMA_STYLE, use_bias_in_qkv=True)
    with pytest.raises(ExportError, match="ForSequenceClassification"):
        export_to_hf(tmp_path / "run", tmp_path / "hf", architecture="qwen2")
    assert not (tmp_path / "hf").exists()
