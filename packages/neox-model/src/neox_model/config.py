"""`ModelConfig`: the architecture hyper-parameters of a GPT-NeoX-family decoder.

Field names are GPT-NeoX's config keys, so a GPT-NeoX YAML maps onto this class key for key.
Only architecture lives here: no paths, no parallel degrees, no precision. One class describes
Pythia / GPT-NeoX-20B (rotary, parallel residual, LayerNorm, GELU), LLaMA and CodeLlama (GQA,
RMSNorm, SwiGLU, no biases), Llama 3 (plus rotary scaling), Mistral (plus a sliding window),
Qwen 2 (a bias on QKV only), Qwen 3 (per-head query/key norms, wider heads), OLMo 2 (norms
after attention and MLP, query/key norms over all heads), Gemma 2 (norms on both sides, soft-
capped logits, alternating sliding windows, scaled embeddings), Falcon- and PaLM-style models,
and mixture-of-experts models (GPT-NeoX's dropless MoE, Mixtral, Qwen2-MoE: the `moe_*` keys).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

PosEmb = Literal["rotary", "alibi", "learned", "sinusoidal", "none"]
Norm = Literal["layernorm", "rmsnorm", "scalenorm"]
NormPlacement = Literal["pre", "post", "sandwich"]
Activation = Literal[
    "gelu",
    "gelu_tanh",
    "relu",
    "silu",
    "swish",
    "softsign",
    "mish",
    "geglu",
    "geglu_tanh",
    "reglu",
    "swiglu",
    "glu",
    "bilinear",
]
GATED_ACTIVATIONS = frozenset({"geglu", "geglu_tanh", "reglu", "swiglu", "glu", "bilinear"})
InitMethod = Literal[
    "normal", "scaled_normal", "small_init", "wang_init", "xavier_normal", "xavier_uniform"
]
AttentionType = Literal["global", "flash"]
# GPT-NeoX's attention_config: [[["global"], 12]] = 12 layers of global attention
AttentionConfig = tuple[tuple[tuple[AttentionType, ...], int], ...]
RopeType = Literal["linear", "dynamic", "llama3", "yarn"]
MoERouterType = Literal["sinkhorn", "topk", "softmax_topk"]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


@dataclass(frozen=True)
class RopeScaling:
    """Rotary frequency scaling for contexts past the one a model was trained at. The names and
    meanings are Hugging Face's `rope_parameters` (the same formulas; see `neox_model.rotary`)."""

    rope_type: RopeType = field(
        metadata=_doc(
            "linear (positions / factor), dynamic (NTK base growth past the original context), "
            "llama3 (Llama 3.1's per-frequency blend) or yarn (Peng et al., 2023)."
        )
    )
    factor: float = field(metadata=_doc("How many times longer than the original context."))
    original_max_position_embeddings: int | None = field(
        default=None,
        metadata=_doc(
            "The context the model was trained at (llama3, yarn and dynamic need it; dynamic "
            "grows the base for positions past it, up to max_position_embeddings)."
        ),
    )
    low_freq_factor: float = field(
        default=1.0,
        metadata=_doc("llama3: wavelengths past original / this are divided by factor."),
    )
    high_freq_factor: float = field(
        default=4.0, metadata=_doc("llama3: wavelengths below original / this are kept.")
    )
    beta_fast: float = field(default=32.0, metadata=_doc("yarn: extrapolation boundary."))
    beta_slow: float = field(default=1.0, metadata=_doc("yarn: interpolation boundary."))
    attention_factor: float | None = field(
        default=None,
        metadata=_doc(
            "yarn: cos and sin are multiplied by it (default 0.1 ln(factor) + 1, or from mscale)."
        ),
    )
    mscale: float | None = field(default=None, metadata=_doc("yarn: DeepSeek's mscale."))
    mscale_all_dim: float | None = field(
        default=None, metadata=_doc("yarn: DeepSeek's mscale_all_dim.")
    )
    truncate: bool = field(
        default=True, metadata=_doc("yarn: round the correction range to whole dimensions.")
    )

    def __post_init__(self) -> None:
        if self.factor < 1.0 and self.rope_type != "linear":
            raise ValueError(f"rope_scaling.factor must be at least 1, got {self.factor}")
        if self.factor <= 0.0:
            raise ValueError(f"rope_scaling.factor must be positive, got {self.factor}")
        if self.rope_type != "linear" and self.original_max_position_embeddings is None:
            raise ValueError(
                f"rope_scaling {self.rope_type} needs original_max_position_embeddings"
            )
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError("rope_scaling.high_freq_factor must exceed low_freq_factor")


def check_moe_settings(
    num_experts: int,
    top_k: int,
    router_type: str,
    normalize_topk: bool | None,
    jitter_eps: float | None,
    shared_size: int,
    *,
    dense: bool = False,
) -> None:
    """Raise a ValueError naming the `moe_*` key of a bad mixture-of-experts setting (the model
    config's and the layers' `MoEConfig` alike); `dense`: one expert, a dense model, whose
    top_k nothing reads."""
    if num_experts < 1:
        raise ValueError(f"moe_num_experts must be at least 1, got {num_experts}")
    if not dense and not 1 <= top_k <= num_experts:
        raise ValueError(f"moe_top_k {top_k} must lie in 1..moe_num_experts ({num_experts})")
    if router_type not in ("sinkhorn", "topk", "softmax_topk"):
        raise ValueError(f"moe_router_type {router_type!r}: use sinkhorn, topk or softmax_topk")
    if normalize_topk and router_type != "softmax_topk":
        raise ValueError(
            f"moe_normalize_topk applies to the softmax_topk router, not {router_type}"
        )
    if jitter_eps is not None and not 0.0 <= jitter_eps < 1.0:
        raise ValueError(f"moe_jitter_eps must lie in [0, 1), got {jitter_eps}")
    if shared_size < 0:
        raise ValueError(
            f"moe_shared_expert_intermediate_size must not be negative, got {shared_size}"
        )


@dataclass(frozen=True)
class ModelConfig:
    """A dense decoder-only transformer as GPT-NeoX describes it."""

    num_layers: int = field(metadata=_doc("Number of transformer blocks."))
    hidden_size: int = field(metadata=_doc("Width of the residual stream."))
    num_attention_heads: int = field(metadata=_doc("Query heads per block."))
    seq_length: int = field(metadata=_doc("Training sequence length in tokens."))
    num_kv_heads: int | None = field(
        default=None,
        metadata=_doc("Key/value heads (GQA; 1 = multi-query); default num_attention_heads."),
    )
    kv_channels: int | None = field(
        default=None,
        metadata=_doc(
            "Width of each attention head (Megatron's name); default hidden_size / "
            "num_attention_heads. Qwen 3 and Gemma 2 have wider heads than that."
        ),
    )
    max_position_embeddings: int | None = field(
        default=None, metadata=_doc("Longest position the model supports; default seq_length.")
    )
    intermediate_size: int | None = field(
        default=None,
        metadata=_doc(
            "MLP width before GPT-NeoX's sizing (default 4 * hidden_size); gated activations "
            "use int(2/3 of it) / 2 as their inner width, rounded up to mlp_multiple_of."
        ),
    )
    mlp_multiple_of: int = field(
        default=1, metadata=_doc("Round the MLP inner width up to a multiple of this.")
    )
    pos_emb: PosEmb = field(default="learned", metadata=_doc("Position encoding."))
    rotary_pct: float = field(
        default=1.0, metadata=_doc("Fraction of each head's dimensions that rotary rotates.")
    )
    rotary_emb_base: int = field(default=10000, metadata=_doc("Rotary frequency base (theta)."))
    rope_scaling: RopeScaling | None = field(
        default=None,
        metadata=_doc(
            "Rotary frequency scaling, e.g. Llama 3.1's {rope_type: llama3, factor: 8, "
            "low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192}."
        ),
    )
    rotary_save_freqs_buffer: bool = field(
        default=False, metadata=_doc("Keep rotary's inverse frequencies in the state dict.")
    )
    gpt_j_residual: bool = field(
        default=False, metadata=_doc("Parallel residual: x + attn(ln1(x)) + mlp(ln2(x)).")
    )
    gpt_j_tied: bool = field(
        default=False, metadata=_doc("With gpt_j_residual: one norm, x + attn(ln(x)) + mlp(ln(x)).")
    )
    norm: Norm = field(default="layernorm", metadata=_doc("Normalisation layer."))
    norm_placement: NormPlacement = field(
        default="pre",
        metadata=_doc(
            "pre: x + attn(norm(x)) (GPT-NeoX, Llama); post: x + norm(attn(x)), the same for the "
            "MLP (OLMo 2); sandwich: x + norm(attn(norm(x))) (Gemma 2). The final norm stays."
        ),
    )
    rmsnorm_unit_offset: bool = field(
        default=False,
        metadata=_doc(
            "RMSNorm scales by 1 + weight, the weight starting at 0 (Gemma), in float32 before "
            "rounding to the activations' type."
        ),
    )
    rmsnorm_fp32_weight: bool = field(
        default=False,
        metadata=_doc(
            "RMSNorm multiplies by its weight in float32, then rounds to the activations' type "
            "(OLMo 2); false: rounds the normalised input, then multiplies (Llama). The same in "
            "fp32; bf16 / fp16 round differently."
        ),
    )
    layernorm_epsilon: float = field(default=1e-5, metadata=_doc("LayerNorm epsilon."))
    rms_norm_epsilon: float = field(default=1e-8, metadata=_doc("RMSNorm epsilon."))
    scalenorm_epsilon: float = field(default=1e-8, metadata=_doc("ScaleNorm epsilon."))
    use_bias_in_norms: bool = field(default=True, metadata=_doc("Norms have a bias."))
    use_bias_in_attn_linear: bool = field(
        default=True, metadata=_doc("QKV and attention output projections have biases.")
    )
    use_bias_in_qkv: bool | None = field(
        default=None,
        metadata=_doc(
            "The QKV projection has a bias (Qwen 2: yes, with none on the output projection); "
            "default use_bias_in_attn_linear."
        ),
    )
    use_qk_layernorm: bool = field(
        default=False,
        metadata=_doc(
            "Normalise each query and key head (norm type and epsilon as norm; one weight of "
            "head width for queries, one for keys) before rotary, as Qwen 3 does. GPT-NeoX's "
            "own form normalises a rank's heads together with one shared weight, which "
            "depends on the tensor-parallel degree: neox normalises per head."
        ),
    )
    qk_layernorm_per_head: bool = field(
        default=True,
        metadata=_doc(
            "With use_qk_layernorm: true normalises each head; false normalises all query heads "
            "together and all key heads together, one weight per feature (OLMo 2; rmsnorm only, "
            "its statistics summed over the tensor-parallel ranks)."
        ),
    )
    use_bias_in_mlp: bool = field(default=True, metadata=_doc("MLP projections have biases."))
    activation: Activation = field(default="gelu", metadata=_doc("MLP activation."))
    no_weight_tying: bool = field(
        default=False, metadata=_doc("Untie the output layer from the input embedding.")
    )
    value_head: bool = field(
        default=False,
        metadata=_doc(
            "A reward model: one score per position (a linear map of the final hidden state "
            "to 1, no bias, as transformers' ...ForSequenceClassification `score`) instead of "
            "the output layer; train_impl rm sets it."
        ),
    )
    sliding_window_width: int | None = field(
        default=None,
        metadata=_doc("Sliding-window attention: a token sees itself and this many before it."),
    )
    global_attention_every: int | None = field(
        default=None,
        metadata=_doc(
            "With sliding_window_width: every this many layers one attends to the whole "
            "sequence (layers n - 1, 2n - 1, ...), the others through the window (Gemma 2: 2)."
        ),
    )
    query_pre_attn_scalar: float | None = field(
        default=None,
        metadata=_doc(
            "Attention scores are scaled by 1 / sqrt(this) (Gemma 2); default head width."
        ),
    )
    attention_logit_softcapping: float | None = field(
        default=None,
        metadata=_doc(
            "Attention scores become cap * tanh(score / cap) before the mask (Gemma 2: 50); "
            "computed without SDPA's fused kernels (flash-attn takes it where used)."
        ),
    )
    final_logit_softcapping: float | None = field(
        default=None,
        metadata=_doc("Output logits become cap * tanh(logit / cap) (Gemma 2: 30)."),
    )
    scale_embeddings: bool = field(
        default=False,
        metadata=_doc(
            "Multiply token embeddings by sqrt(hidden_size), rounded to their type (Gemma)."
        ),
    )
    attention_config: AttentionConfig | None = field(
        default=None,
        metadata=_doc(
            "Attention per layer, e.g. [[['flash'], 12]]; default global (SDPA). 'flash' needs "
            "flash-attn (the neox-model[flash] extra) where the model trains or runs."
        ),
    )
    rope_fusion: bool = field(
        default=False,
        metadata=_doc(
            "Rotary embeddings in one CUDA kernel (csrc/kernels/rotary.cu) on GPUs; built on "
            "first use, needs nvcc. The PyTorch reference runs on CPU. No effect without rotary."
        ),
    )
    rmsnorm_fusion: bool = field(
        default=False,
        metadata=_doc(
            "RMSNorm in one CUDA kernel (csrc/kernels/rms_norm.cu) on GPUs; built on first use, "
            "needs nvcc. The PyTorch reference runs on CPU. No effect unless norm is rmsnorm."
        ),
    )
    output_layer_parallelism: Literal["column"] = field(
        default="column", metadata=_doc("Output layer split over the vocabulary.")
    )
    moe_num_experts: int = field(
        default=1,
        metadata=_doc(
            "Experts of each mixture-of-experts layer; 1: every MLP is dense (GPT-NeoX's key)."
        ),
    )
    moe_expert_interval: int = field(
        default=1,
        metadata=_doc(
            "Layer i (counted from 0) is a mixture-of-experts layer when i % this == 0, as in "
            "GPT-NeoX; the others keep the dense MLP."
        ),
    )
    moe_top_k: int = field(default=1, metadata=_doc("Experts each token is sent to."))
    moe_router_type: MoERouterType = field(
        default="sinkhorn",
        metadata=_doc(
            "sinkhorn (GPT-NeoX's default: Sinkhorn-balanced choice in training, no load-"
            "balancing loss), topk (GPT-NeoX's: top-k of the softmax, not renormalised) or "
            "softmax_topk (Mixtral, Qwen2-MoE: top-k of the float32 softmax, renormalised "
            "unless moe_normalize_topk is false)."
        ),
    )
    moe_normalize_topk: bool | None = field(
        default=None,
        metadata=_doc(
            "softmax_topk: renormalise the chosen experts' weights to sum 1 (Mixtral; "
            "Qwen2-MoE's norm_topk_prob). null: the router's own (yes for softmax_topk)."
        ),
    )
    moe_jitter_eps: float | None = field(
        default=None,
        metadata=_doc(
            "In training the router reads x times uniform noise in [1 - eps, 1 + eps] "
            "(GPT-NeoX's key); null: none."
        ),
    )
    moe_lbl_in_fp32: bool = field(
        default=False,
        metadata=_doc("Compute the load-balancing loss's softmax in float32 (GPT-NeoX's key)."),
    )
    moe_loss_coeff: float = field(
        default=0.1,
        metadata=_doc(
            "Weight of the load-balancing loss in the training loss (GPT-NeoX's key and "
            "default; transformers' router_aux_loss_coef): num_experts * sum_e f_e P_e over "
            "the tokens of every MoE layer together, as transformers' Mixtral computes it. "
            "Not with the sinkhorn router, which balances by itself."
        ),
    )
    moe_z_loss_coeff: float = field(
        default=0.0,
        metadata=_doc(
            "Weight of the router z-loss (ST-MoE: mean logsumexp(router logits)^2, averaged "
            "over the MoE layers) in the training loss; 0: off."
        ),
    )
    moe_ffn_hidden_size: int | None = field(
        default=None,
        metadata=_doc(
            "Each expert's inner width (Mixtral's intermediate_size, Qwen2-MoE's "
            "moe_intermediate_size); null: the dense MLP's."
        ),
    )
    moe_shared_expert_intermediate_size: int = field(
        default=0,
        metadata=_doc(
            "Inner width of a shared expert every token passes through, behind a sigmoid gate "
            "(Qwen2-MoE's shared_expert_intermediate_size); 0: none."
        ),
    )
    hidden_dropout: float = field(default=0.1, metadata=_doc("Dropout on block outputs."))
    attention_dropout: float = field(default=0.1, metadata=_doc("Dropout on attention probs."))
    init_method: InitMethod = field(
        default="normal", metadata=_doc("Initialisation of input-side weight matrices.")
    )
    output_layer_init_method: InitMethod = field(
        default="scaled_normal", metadata=_doc("Initialisation of attention/MLP output matrices.")
    )
    init_method_std: float = field(default=0.02, metadata=_doc("Standard deviation for 'normal'."))
    make_vocab_size_divisible_by: int = field(
        default=128, metadata=_doc("Pad the vocabulary to a multiple of this (x tensor parallel).")
    )
    vocab_size: int | None = field(
        default=None,
        metadata=_doc("Tokenizer vocabulary size before padding; set from the tokenizer."),
    )

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):  # from JSON, YAML or a keyword argument
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        self._check_sizes()
        self._check_positions()
        self._check_attention()
        self._check_moe()
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def _check_sizes(self) -> None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.kv_channels is not None and self.kv_channels <= 0:
            raise ValueError(f"kv_channels must be positive, got {self.kv_channels}")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads}), or set kv_channels"
            )
        if self.num_kv_heads is not None and (
            self.num_kv_heads <= 0 or self.num_attention_heads % self.num_kv_heads
        ):
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.mlp_multiple_of <= 0 or self.make_vocab_size_divisible_by <= 0:
            raise ValueError("mlp_multiple_of and make_vocab_size_divisible_by must be positive")
        if self.gpt_j_tied and not self.gpt_j_residual:
            raise ValueError("gpt_j_tied ties the two norms of gpt_j_residual; set both")
        if self.norm_placement != "pre" and self.gpt_j_residual:
            raise ValueError(
                f"norm_placement {self.norm_placement!r} is for sequential blocks; "
                "gpt_j_residual's parallel residual normalises inputs (norm_placement: pre)"
            )
        if (
            not self.qk_layernorm_per_head
            and self.use_qk_layernorm
            and (self.norm != "rmsnorm" or self.use_bias_in_norms)
        ):
            raise ValueError(
                "qk_layernorm_per_head false (one norm over all heads) needs norm: rmsnorm "
                "and use_bias_in_norms: false"
            )

    def _check_positions(self) -> None:
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in (0, 1], got {self.rotary_pct}")
        if self.pos_emb == "rotary" and self.rotary_dim < 2:
            raise ValueError(
                f"rotary_pct {self.rotary_pct} of head size {self.head_dim} leaves fewer than "
                "2 rotary dimensions"
            )
        if self.rope_scaling is not None and self.pos_emb != "rotary":
            raise ValueError(f"rope_scaling scales rotary positions; pos_emb is {self.pos_emb!r}")
        if self.max_positions < self.seq_length:
            raise ValueError(
                f"max_position_embeddings ({self.max_position_embeddings}) is smaller than "
                f"seq_length ({self.seq_length})"
            )
        if self.sliding_window_width is not None and self.sliding_window_width <= 0:
            raise ValueError(
                f"sliding_window_width must be positive, not {self.sliding_window_width}"
            )
        if self.global_attention_every is not None and (
            self.global_attention_every < 1 or self.sliding_window_width is None
        ):
            raise ValueError(
                "global_attention_every needs sliding_window_width and a positive interval, "
                f"got {self.global_attention_every}"
            )
        for name in (
            "query_pre_attn_scalar",
            "attention_logit_softcapping",
            "final_logit_softcapping",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for key in ("rmsnorm_unit_offset", "rmsnorm_fp32_weight"):
            if getattr(self, key) and self.norm != "rmsnorm":
                raise ValueError(f"{key} needs norm: rmsnorm")
        if self.rmsnorm_unit_offset and self.use_qk_layernorm and not self.qk_layernorm_per_head:
            raise ValueError(
                "rmsnorm_unit_offset is not supported for query/key norms over all heads "
                "(qk_layernorm_per_head: false)"
            )

    def _check_moe(self) -> None:
        if self.moe_expert_interval < 1:
            raise ValueError(
                f"moe_expert_interval must be at least 1, got {self.moe_expert_interval}"
            )
        check_moe_settings(
            self.moe_num_experts,
            self.moe_top_k,
            self.moe_router_type,
            self.moe_normalize_topk,
            self.moe_jitter_eps,
            self.moe_shared_expert_intermediate_size,
            dense=self.moe_num_experts == 1,
        )
        for name in ("moe_loss_coeff", "moe_z_loss_coeff"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.moe_ffn_hidden_size is not None and self.moe_ffn_hidden_size <= 0:
            raise ValueError(
                f"moe_ffn_hidden_size must be positive, got {self.moe_ffn_hidden_size}"
            )

    def _check_attention(self) -> None:
        types = self.attention_types
        if len(types) != self.num_layers:
            raise ValueError(
                f"attention_config describes {len(types)} layers but num_layers is "
                f"{self.num_layers}"
            )

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def attention_width(self) -> int:
        """The width of all query heads together (the attention output projection's input)."""
        return self.num_attention_heads * self.head_dim

    @property
    def qkv_bias(self) -> bool:
        if self.use_bias_in_qkv is None:
            return self.use_bias_in_attn_linear
        return self.use_bias_in_qkv

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of layer `layer` (0-based), None where it attends globally."""
        every = self.global_attention_every
        if every is not None and (layer + 1) % every == 0:
            return None
        return self.sliding_window_width

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that rotary rotates (GPT-NeoX: int(head_dim * rotary_pct))."""
        return int(self.head_dim * self.rotary_pct)

    @property
    def gated(self) -> bool:
        return self.activation in GATED_ACTIVATIONS

    @property
    def ffn_size(self) -> int:
        """The MLP's inner width (the input width of its second projection), GPT-NeoX's sizing."""
        width = self.intermediate_size or 4 * self.hidden_size
        if self.gated:
            width = int(width * 2 / 3) // 2
        return round_up(width, self.mlp_multiple_of)

    @property
    def moe(self) -> bool:
        """Whether any layer is a mixture of experts."""
        return self.moe_num_experts > 1

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer `layer` (from 0) is a mixture-of-experts layer (GPT-NeoX's rule)."""
        return self.moe and layer % self.moe_expert_interval == 0

    @property
    def moe_layers(self) -> int:
        """How many layers are mixtures of experts."""
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def expert_ffn_size(self) -> int:
        """Each expert's inner width."""
        return self.moe_ffn_hidden_size or self.ffn_size

    @property
    def max_positions(self) -> int:
        return self.max_position_embeddings or self.seq_length

    @property
    def attention_types(self) -> tuple[AttentionType, ...]:
        """The attention type of each layer, expanded from attention_config."""
        if self.attention_config is None:
            default: tuple[AttentionType, ...] = ("global",)
            return default * self.num_layers
        types: tuple[AttentionType, ...] = tuple(
            t for kinds, repeat in self.attention_config for _ in range(repeat) for t in kinds
        )
        return types

    def padded_vocab(self, tensor_parallel: int = 1) -> int:
        """The vocabulary padded to a multiple of make_vocab_size_divisible_by x tensor parallel."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set: build the config with with_vocab(n)")
        return round_up(self.vocab_size, self.make_vocab_size_divisible_by * tensor_parallel)

    @property
    def padded_vocab_size(self) -> int:
        return self.padded_vocab(1)

    def with_vocab(self, vocab_size: int) -> ModelConfig:
        return dataclasses.replace(self, vocab_size=vocab_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        values = dict(values)
        if values.get("attention_config") is not None:  # JSON gives lists; the field is tuples
            values["attention_config"] = tuple(
                (tuple(kinds), repeat) for kinds, repeat in values["attention_config"]
            )
        return cls(**values)
