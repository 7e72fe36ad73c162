"""Every predefined architecture in configs/ against the published model.

Built on the meta device (nothing allocated), each config's model has exactly as many parameters
as the Hugging Face model built, also on meta, from the published config.json values, and as
the published total (or, where only those are published, as many non-embedding parameters and
the rounded size); where Hugging Face has the architecture, neox-convert's export names every
Hugging Face tensor once, with its shape, and writes the published config.json values.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers.conversion_mapping import get_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

from neox_convert import ARCHITECTURES
from neox_model import ModelConfig, Transformer, count_parameters
from neox_train import load_run_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

NEOX_VOCAB = 50277  # the GPT-NeoX-20B tokenizer (Pythia, GPT-NeoX-20B)
GPT2_VOCAB = 50257  # GPT-2's BPE (the classic GPT-NeoX sizes)
LLAMA3_VOCAB = 128256  # Llama 3's tokenizer.json: 128,000 tokens and 256 special ones
QWEN2_VOCAB = 151665  # Qwen 2 / 2.5's tokenizer.json: 151,643 tokens and 22 special ones
QWEN3_VOCAB = 151669  # Qwen 3's: four more (<think>, </think>, <tool_response>, </tool_response>)
QWEN15_VOCAB = 151646  # Qwen1.5's tokenizer.json: 151,643 tokens and 3 special ones
OLMO2_VOCAB = 100278  # OLMo 2's dolma2 tokenizer (OLMo's vocab_size; embedding_size is 100352)
GEMMA2_VOCAB = 256000  # Gemma 2's SentencePiece tokenizer and Hugging Face embedding rows


@dataclass(frozen=True)
class Published:
    vocab: int  # the tokenizer's vocabulary, before padding
    hf_class: str | None  # the transformers class of the same architecture, if any
    hf: dict[str, Any] = field(default_factory=dict)  # its published config.json values
    total: int | None = None  # the published parameter count
    export: str | None = None  # neox-convert's --architecture for it
    non_embedding: int | None = None  # the published count without the embedding (and output)
    billions: float | None = None  # the published size rounded to 0.1B, where no total is
    active: int | float | None = None  # a mixture of experts' active count (a float: rounded)


def gpt_neox(layers, hidden, heads, vocab, rotary=1.0, parallel=False, total=None):
    """A GPTNeoX model; `vocab` is the padded row count Hugging Face's config gives."""
    hf = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        max_position_embeddings=2048,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": rotary,
        },
        layer_norm_eps=1e-5,
        use_parallel_residual=parallel,
        tie_word_embeddings=False,
    )
    return Published(NEOX_VOCAB, "GPTNeoXForCausalLM", hf, total, "neox")


def classic(layers, hidden, heads, vocab=50304, rotary=1.0, parallel=False):
    """A classic GPT-NeoX size: the GPT-2 tokenizer, its vocabulary padded as GPT-NeoX pads."""
    return dataclasses.replace(
        gpt_neox(layers, hidden, heads, vocab, rotary, parallel), vocab=GPT2_VOCAB
    )


# neox-convert's --architecture for each transformers class it exports
EXPORTS = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Olmo2ForCausalLM": "olmo2",
    "Gemma2ForCausalLM": "gemma2",
    "MixtralForCausalLM": "mixtral",
    "Qwen2MoeForCausalLM": "qwen2_moe",
}


def llama(layers, hidden, heads, inner, total, kv=None, vocab=32000, context=2048, **extra):
    """A Llama-family model (also Mistral, Qwen); `rope` replaces the default rope_parameters."""
    theta = extra.pop("theta", 10000.0)
    hf = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv or heads,
        intermediate_size=inner,
        hidden_act="silu",
        max_position_embeddings=context,
        rms_norm_eps=extra.pop("eps", 1e-5),
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        tie_word_embeddings=False,
    )
    hf_class = extra.pop("hf_class", "LlamaForCausalLM")
    if "rope" in extra:
        hf["rope_parameters"] = {"rope_theta": theta, **extra.pop("rope")}
    hf.update(extra)
    return Published(vocab, hf_class, hf, total, EXPORTS[hf_class])


def llama3_rope(factor: float) -> dict[str, Any]:
    """Llama 3.1's and 3.2's rope_scaling in config.json (transformers' rope_parameters)."""
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def llama3(layers, hidden, heads, inner, total, factor, context=131072, **extra):
    return llama(
        layers,
        hidden,
        heads,
        inner,
        total,
        kv=8,
        vocab=LLAMA3_VOCAB,
        context=context,
        theta=500000.0,
        rope=llama3_rope(factor),
        **extra,
    )


def dense_125m() -> int:
    """GPT-NeoX's 125M, counted as `gpt_neox_dense` in neox-train's tests: untied embeddings of
    GPT-2's vocabulary padded to 50,304, 12 layers of 12 h^2 + 13 h, a final LayerNorm."""
    return 2 * 50304 * 768 + 12 * (12 * 768**2 + 13 * 768) + 2 * 768


def qwen(version, layers, hidden, heads, kv, inner, total, padded=151936, **extra):
    """A Qwen 2.5 or 3 model: `padded` is config.json's vocab_size, more rows than the
    tokenizer has. No sliding window (use_sliding_window false; its sliding_window and
    max_window_layers are then unused)."""
    published = llama(
        layers,
        hidden,
        heads,
        inner,
        total,
        kv=kv,
        vocab=padded,
        eps=1e-6,
        theta=1000000.0,
        **{"hf_class": f"Qwen{version}ForCausalLM", **extra},
        use_sliding_window=False,
    )
    return dataclasses.replace(published, vocab={2: QWEN2_VOCAB, 3: QWEN3_VOCAB}[version])


def qwen3(layers, hidden, heads, inner, total, **extra):
    """A Qwen 3 model: 8 key/value heads, every head 128 wide, no biases, 32,768 positions."""
    return qwen(3, layers, hidden, heads, 8, inner, total, context=32768, head_dim=128, **extra)


def olmo2(layers, hidden, heads, inner, total):
    """An OLMo 2 model: as many key/value heads as query heads, no biases, 4096 positions,
    rotary base 500,000, untied; config.json's vocab_size 100352 is the tokenizer's 100,278
    tokens padded to a multiple of 128."""
    published = llama(
        layers,
        hidden,
        heads,
        inner,
        total,
        vocab=100352,
        context=4096,
        eps=1e-6,
        theta=500000.0,
        hf_class="Olmo2ForCausalLM",
        attention_bias=False,
    )
    return dataclasses.replace(published, vocab=OLMO2_VOCAB)


def gemma2(layers, hidden, heads, kv, inner, non_embedding, billions):
    """A Gemma 2 model (google/gemma-2-2b's, -9b's config.json): heads 256 wide, scores scaled
    by 1 / sqrt(256) and soft-capped at 50, logits at 30, a 4096-position window on layers 0, 2,
    4, ... (Gemma2Config's default layer_types), 8192 positions, no biases, tied embeddings.
    The report (Gemma Team, 2024, Table 2) counts embedding and non-embedding parameters; its
    embedding has 256,128 rows, 128 more than the released tokenizer and Hugging Face's, so
    its non-embedding count is checked exactly and its rounded size (2.6B, 9.2B: 2 and 9 in
    the names) to 0.1B, not a total."""
    published = llama(
        layers,
        hidden,
        heads,
        inner,
        None,
        kv=kv,
        vocab=GEMMA2_VOCAB,
        context=8192,
        eps=1e-6,
        hf_class="Gemma2ForCausalLM",
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=256,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window=4096,
        attention_bias=False,
        tie_word_embeddings=True,
    )
    del published.hf["hidden_act"]  # Gemma2Config's key is hidden_activation
    return dataclasses.replace(published, non_embedding=non_embedding, billions=billions)


PYTHIA_CLASSIC = 0.25  # rotary on a quarter of each head


def palm_8b_total() -> int:
    """PaLM 8B's parameters from the shapes in Chowdhery et al. (2022), Table 1: 32 layers of
    width 4096, 16 query heads of 256, one key/value head, a 4 x 4096 SwiGLU, LayerNorm
    weights only, no biases, a tied 256,000-token embedding."""
    h, heads, head_dim, ffn, vocab = 4096, 16, 256, 4 * 4096, 256000
    attention = h * heads * head_dim + 2 * h * head_dim + heads * head_dim * h
    layer = attention + 3 * h * ffn + h  # one LayerNorm shared by attention and MLP
    return vocab * h + 32 * layer + h


PUBLISHED: dict[str, Published] = {
    # Pythia (Biderman et al., 2023); Hugging Face EleutherAI/pythia-*
    "pythia/14M.yml": gpt_neox(6, 128, 4, 50304, PYTHIA_CLASSIC, True, 14_067_712),
    "pythia/31M.yml": gpt_neox(6, 256, 8, 50304, PYTHIA_CLASSIC, True, 30_494_720),
    "pythia/70M.yml": gpt_neox(6, 512, 8, 50304, PYTHIA_CLASSIC, True, 70_426_624),
    "pythia/160M.yml": gpt_neox(12, 768, 12, 50304, PYTHIA_CLASSIC, True, 162_322_944),
    "pythia/410M.yml": gpt_neox(24, 1024, 16, 50304, PYTHIA_CLASSIC, True, 405_334_016),
    "pythia/1B.yml": gpt_neox(16, 2048, 8, 50304, PYTHIA_CLASSIC, True, 1_011_781_632),
    "pythia/1-4B.yml": gpt_neox(24, 2048, 16, 50304, PYTHIA_CLASSIC, True, 1_414_647_808),
    "pythia/2-8B.yml": gpt_neox(32, 2560, 32, 50304, PYTHIA_CLASSIC, True, 2_775_208_960),
    "pythia/6-9B.yml": gpt_neox(32, 4096, 32, 50432, PYTHIA_CLASSIC, True, 6_857_302_016),
    "pythia/12B.yml": gpt_neox(36, 5120, 40, 50688, PYTHIA_CLASSIC, True, 11_846_072_320),
    # GPT-NeoX-20B (Black et al., 2022); EleutherAI/gpt-neox-20b
    "20B.yml": gpt_neox(44, 6144, 64, 50432, PYTHIA_CLASSIC, True, 20_554_567_680),
    # the classic GPT-NeoX sizes: GPT-2 vocabulary padded to 128 x tensor parallel
    "19M.yml": classic(6, 512, 8),
    "49M.yml": classic(10, 640, 10, rotary=PYTHIA_CLASSIC, parallel=True),
    "125M.yml": classic(12, 768, 12),
    # GPT-NeoX's 125M-dmoe: 125M with 4 experts per MLP (4h MLPs with biases) and a router of
    # 768 x 4, one expert per token; counted from that definition (no published count)
    "moe/125M-dmoe.yml": dataclasses.replace(
        classic(12, 768, 12),
        hf_class=None,
        export=None,
        total=dense_125m() + 12 * (3 * (8 * 768**2 + 5 * 768) + 768 * 4),
        active=dense_125m() + 12 * 768 * 4,
    ),
    "350M.yml": classic(24, 1024, 16),
    "760M.yml": classic(24, 1536, 16),
    "800M.yml": classic(16, 2048, 8),
    "1-3B.yml": classic(24, 2048, 16),
    "2-7B.yml": classic(32, 2560, 32),
    "6-7B.yml": classic(32, 4096, 32),
    "13B.yml": classic(40, 5120, 40, 50432),
    "175B.yml": classic(96, 12288, 96, 51200),
    # LLaMA (Touvron et al., 2023); Meta's params.json
    "llama/7B.yml": llama(32, 4096, 32, 11008, 6_738_415_616, eps=1e-6),
    "llama/13B.yml": llama(40, 5120, 40, 13824, 13_015_864_320, eps=1e-6),
    "llama/30B.yml": llama(60, 6656, 52, 17920, 32_528_943_616, eps=1e-6),
    "llama/65B.yml": llama(80, 8192, 64, 22016, 65_285_660_672),
    # Llama 2; meta-llama/Llama-2-*-hf
    "llama2/7B.yml": llama(32, 4096, 32, 11008, 6_738_415_616, context=4096),
    "llama2/13B.yml": llama(40, 5120, 40, 13824, 13_015_864_320, context=4096),
    "llama2/70B.yml": llama(80, 8192, 64, 28672, 68_976_648_192, kv=8, context=4096),
    # Code Llama; codellama/CodeLlama-*-hf
    "llama2/codellama_7B.yml": llama(
        32, 4096, 32, 11008, 6_738_546_688, vocab=32016, context=16384, theta=1e6
    ),
    "llama2/codellama_34B.yml": llama(
        48, 8192, 64, 22016, 33_743_970_304, kv=8, context=16384, theta=1e6
    ),
    # Llemma; EleutherAI/llemma_7b, llemma_34b
    "llemma/7B.yml": llama(32, 4096, 32, 11008, 6_738_546_688, vocab=32016, context=4096),
    "llemma/34B.yml": llama(48, 8192, 64, 22016, 33_743_970_304, kv=8, context=4096, theta=1e6),
    # Mistral 7B; mistralai/Mistral-7B-v0.1 (Hugging Face's window counts the query itself)
    "mistral/7B.yml": llama(
        32,
        4096,
        32,
        14336,
        7_241_732_096,
        kv=8,
        context=32768,
        hf_class="MistralForCausalLM",
        sliding_window=4096,
    ),
    # Llama 3.1 (Llama Team, 2024); meta-llama/Llama-3.1-8B, -70B
    "llama3/3.1-8B.yml": llama3(32, 4096, 32, 14336, 8_030_261_248, factor=8.0),
    "llama3/3.1-70B.yml": llama3(80, 8192, 64, 28672, 70_553_706_496, factor=8.0),
    # Llama 3.2; meta-llama/Llama-3.2-1B, -3B (tied embeddings)
    "llama3/3.2-1B.yml": llama3(
        16, 2048, 32, 8192, 1_235_814_400, factor=32.0, head_dim=64, tie_word_embeddings=True
    ),
    "llama3/3.2-3B.yml": llama3(
        28, 3072, 24, 8192, 3_212_749_824, factor=32.0, head_dim=128, tie_word_embeddings=True
    ),
    # Qwen2.5 (Qwen Team, 2024); Qwen/Qwen2.5-0.5B, -7B (a bias on q, k and v only)
    "qwen2.5/0.5B.yml": qwen(
        2, 24, 896, 14, 2, 4864, 494_032_768, context=32768, tie_word_embeddings=True
    ),
    "qwen2.5/7B.yml": qwen(2, 28, 3584, 28, 4, 18944, 7_615_616_512, 152064, context=131072),
    # Qwen3 (Qwen Team, 2025); Qwen/Qwen3-0.6B-Base, -8B-Base (heads 128 wide, q/k norms)
    "qwen3/0.6B.yml": qwen3(28, 1024, 16, 3072, 596_049_920, tie_word_embeddings=True),
    "qwen3/8B.yml": qwen3(36, 4096, 32, 12288, 8_190_735_360),
    # OLMo 2 (Team OLMo, 2024); allenai/OLMo-2-0425-1B, allenai/OLMo-2-1124-7B (norms after
    # attention and MLP, query/key norms over all heads). Totals: Hugging Face's count of each
    # repository's safetensors weights (the model cards name them 1B and 7B)
    "olmo2/1B.yml": olmo2(16, 2048, 16, 8192, 1_484_916_736),
    "olmo2/7B.yml": olmo2(32, 4096, 32, 11008, 7_298_617_344),
    # Gemma 2 (Gemma Team, 2024); google/gemma-2-2b, -9b (norms on both sides of attention and
    # MLP, soft caps, a window on every other layer, scaled embeddings)
    "gemma2/2B.yml": gemma2(26, 2304, 8, 4, 9216, 2_024_517_888, 2.6),
    "gemma2/9B.yml": gemma2(42, 3584, 16, 8, 14336, 8_324_201_984, 9.2),
    # Mixtral 8x7B (Jiang et al., 2024); mistralai/Mixtral-8x7B-v0.1: "46.7B total
    # parameters but only uses 12.9B parameters per token"
    "mixtral/8x7B.yml": dataclasses.replace(
        llama(
            32,
            4096,
            32,
            14336,
            46_702_792_704,
            kv=8,
            context=32768,
            theta=1000000.0,
            hf_class="MixtralForCausalLM",
            num_local_experts=8,
            num_experts_per_tok=2,
            sliding_window=None,
            router_aux_loss_coef=0.02,
        ),
        active=12.9,
    ),
    # Qwen1.5-MoE-A2.7B (Qwen Team, 2024); Qwen/Qwen1.5-MoE-A2.7B: "14.3B parameters in total
    # and 2.7B activated parameters during runtime"
    "qwen1.5-moe/A2.7B.yml": dataclasses.replace(
        qwen(
            2,
            24,
            2048,
            16,
            16,
            5632,
            None,
            context=8192,
            hf_class="Qwen2MoeForCausalLM",
            moe_intermediate_size=1408,
            shared_expert_intermediate_size=5632,
            num_experts=60,
            num_experts_per_tok=4,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            router_aux_loss_coef=0.001,
        ),
        vocab=QWEN15_VOCAB,
        billions=14.3,
        active=2.7,
    ),
    # Falcon-7B's sizes (tiiuae/falcon-7b); neox-convert has no Falcon export
    "falcon/7B.yml": Published(
        65024,
        "FalconForCausalLM",
        dict(
            vocab_size=65024,
            hidden_size=4544,
            num_hidden_layers=32,
            num_attention_heads=71,
            multi_query=True,
            parallel_attn=True,
            bias=False,
            new_decoder_architecture=False,
        ),
        6_921_720_704,
    ),
    # PaLM 8B's sizes; transformers has no PaLM
    "palm/8B.yml": Published(256000, None, total=palm_8b_total()),
}


def test_every_predefined_architecture_is_checked():
    shipped = {
        str(p.relative_to(CONFIGS))
        for p in CONFIGS.rglob("*.yml")
        if p.parent.name not in ("cpu", "post-training")  # those: test_post_training_configs
        and p.name
        not in ("cpu_demo.yml", "local_setup.yml", "slurm_local.yml", "text_generation.yml")
    }
    assert shipped == set(PUBLISHED)


@pytest.mark.parametrize("name", ["sft", "dpo", "kto", "rm"])
def test_post_training_configs_are_llama_3_8b(name):
    """configs/post-training/: Llama 3.1 8B's architecture (llama3/3.1-8B.yml's model keys), the
    reward model with a score head in place of its 128,256 x 4096 output layer."""
    base = load_run_config([CONFIGS / "llama3" / "3.1-8B.yml"]).run.model
    run = load_run_config([CONFIGS / "post-training" / f"llama3-8b-{name}.yml"]).run
    shape = dataclasses.replace(run.model, seq_length=base.seq_length, value_head=False)
    assert shape == base
    count = count_parameters(run.model.with_vocab(128256))
    output = 128256 * 4096
    assert count == 8_030_261_248 - (output - 4096 if name == "rm" else 0)


@functools.cache
def neox_model(name: str) -> tuple[ModelConfig, int, Transformer]:
    """(config with the tokenizer's vocabulary, its tensor-parallel size, the model on meta,
    its vocabulary padded for that size)."""
    run = load_run_config([CONFIGS / name]).run
    config = run.model.with_vocab(PUBLISHED[name].vocab)
    tp = run.parallel.model_parallel_size
    with torch.device("meta"):
        model = Transformer(config, padded_vocab=config.padded_vocab(tp))
    return config, tp, model


def hf_config(published: Published) -> Any:
    assert published.hf_class is not None
    name = published.hf_class.replace("ForCausalLM", "Config")
    return getattr(transformers, name)(**published.hf)


def hf_model(config: Any, hf_class: str) -> torch.nn.Module:
    with torch.device("meta"):
        return getattr(transformers, hf_class)(config)


def numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights count once


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_model(name):
    published = PUBLISHED[name]
    config, tp, model = neox_model(name)
    count = numel(model)
    assert model.embed_in.weight.device.type == "meta"
    assert count == count_parameters(config, tp)
    if published.hf_class is not None:
        assert config.padded_vocab(tp) == published.hf["vocab_size"]
        assert count == numel(hf_model(hf_config(published), published.hf_class))
    if published.total is not None:
        assert count == published.total
    if published.non_embedding is not None:
        embeddings = model.embed_in.weight.numel()
        if model.embed_out is not None:
            embeddings += model.embed_out.weight.numel()
        assert count - embeddings == published.non_embedding
    if published.billions is not None:  # a rounded size: checked to the digit given
        assert round(count / 1e9, 1) == published.billions
    active = count_parameters(config, tp, active=True)
    if published.active is None:
        assert active == count  # a dense model: every parameter is active
    elif isinstance(published.active, float):
        assert round(active / 1e9, 1) == published.active
    else:
        assert active == published.active


EXPORTED = sorted(name for name, p in PUBLISHED.items() if p.export is not None)
COMPARED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "rope_parameters",
    "layer_norm_eps",
    "rms_norm_eps",
    "use_parallel_residual",
    "sliding_window",
    "use_sliding_window",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "hidden_activation",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "layer_types",
    "num_local_experts",
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
    "router_aux_loss_coef",
)


def head_width(hf: Any) -> int:
    """A transformers config's attention head width (head_dim, where it has one set)."""
    return getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads


@pytest.mark.parametrize("name", EXPORTED)
def test_export_covers_every_hugging_face_tensor(name):
    published = PUBLISHED[name]
    assert published.export is not None and published.hf_class is not None
    config, tp, model = neox_model(name)
    arch = ARCHITECTURES[published.export]  # type: ignore[index]
    assert arch.export_problems(config) == []
    exported_config = arch.hf_config(config, None, torch.float32, config.padded_vocab(tp))
    expected = hf_config(published)
    for key in COMPARED:
        if hasattr(expected, key):
            assert getattr(exported_config, key) == getattr(expected, key), key
    assert head_width(exported_config) == head_width(expected)
    exported = arch.to_hf(model.state_dict(), config)
    theirs = hf_model(expected, published.hf_class)
    loaded = loaded_shapes(exported, published.hf_class, expected.model_type)
    assert loaded == {k: tuple(p.shape) for k, p in theirs.named_parameters()}


def loaded_shapes(exported: dict[str, Any], hf_class: str, model_type: str) -> dict[str, Any]:
    """The parameters checkpoint tensors load into, with their shapes: transformers renames some
    names of older checkpoints as it loads them (GPTNeoX's embed_out is lm_head in 5.x) and
    stacks the experts that the files keep apart (`experts.E.w1` and `w3` into
    `experts.gate_up_proj`, experts x (w1 rows + w3 rows) x hidden). Each file tensor loads once."""
    mapping = [
        *(get_checkpoint_conversion_mapping(hf_class) or []),
        *(get_checkpoint_conversion_mapping(model_type) or []),
    ]
    shapes: dict[str, Any] = {}
    stacked: dict[str, dict[int, list[tuple[int, ...]]]] = {}
    for name, tensor in exported.items():
        for rule in mapping:
            if isinstance(rule, WeightRenaming):
                name = re.sub(rule.source_patterns[0], rule.target_patterns[0], name)
        for rule in mapping:
            if isinstance(rule, WeightRenaming):
                continue
            for pattern in rule.source_patterns:
                regex = re.escape(pattern).replace(r"\*", r"(\d+)") + "$"
                match = re.search(regex, name)
                if match:
                    target = name[: match.start()] + rule.target_patterns[0]
                    stacked.setdefault(target, {}).setdefault(int(match[1]), []).append(
                        tuple(tensor.shape)
                    )
                    break
            else:
                continue
            break
        else:
            assert name not in shapes, f"{name} loaded twice"
            shapes[name] = tuple(tensor.shape)
    for target, experts in stacked.items():
        first = experts[0]
        assert sorted(experts) == list(range(len(experts)))
        assert all(parts == first for parts in experts.values())  # every expert alike
        rows = sum(shape[0] for shape in first)
        shapes[target] = (len(experts), rows, first[0][1])
    return shapes
