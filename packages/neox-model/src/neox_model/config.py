"""`ModelConfig`: the architecture hyper-parameters of a GPT-NeoX-family decoder.

Field names are GPT-NeoX's config keys, so a GPT-NeoX YAML maps onto this class key for key.
Only architecture lives here: no paths, no parallel degrees, no precision. One class describes
Pythia / GPT-NeoX-20B (rotary, parallel residual, LayerNorm, GELU), LLaMA and CodeLlama (GQA,
RMSNorm, SwiGLU, no biases), Mistral (plus a sliding window), Falcon- and PaLM-style models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

PosEmb = Literal["rotary", "alibi", "learned", "sinusoidal", "none"]
Norm = Literal["layernorm", "rmsnorm", "scalenorm"]
Activation = Literal[
    "gelu",
    "relu",
    "silu",
    "swish",
    "softsign",
    "mish",
    "geglu",
    "reglu",
    "swiglu",
    "glu",
    "bilinear",
]
GATED_ACTIVATIONS = frozenset({"geglu", "reglu", "swiglu", "glu", "bilinear"})
InitMethod = Literal[
    "normal", "scaled_normal", "small_init", "wang_init", "xavier_normal", "xavier_uniform"
]
AttentionType = Literal["global", "flash"]
# GPT-NeoX's attention_config: [[["global"], 12]] = 12 layers of global attention
AttentionConfig = tuple[tuple[tuple[AttentionType, ...], int], ...]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


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
    layernorm_epsilon: float = field(default=1e-5, metadata=_doc("LayerNorm epsilon."))
    rms_norm_epsilon: float = field(default=1e-8, metadata=_doc("RMSNorm epsilon."))
    scalenorm_epsilon: float = field(default=1e-8, metadata=_doc("ScaleNorm epsilon."))
    use_bias_in_norms: bool = field(default=True, metadata=_doc("Norms have a bias."))
    use_bias_in_attn_linear: bool = field(
        default=True, metadata=_doc("QKV and attention output projections have biases.")
    )
    use_bias_in_mlp: bool = field(default=True, metadata=_doc("MLP projections have biases."))
    activation: Activation = field(default="gelu", metadata=_doc("MLP activation."))
    no_weight_tying: bool = field(
        default=False, metadata=_doc("Untie the output layer from the input embedding.")
    )
    sliding_window_width: int | None = field(
        default=None,
        metadata=_doc("Sliding-window attention: a token sees itself and this many before it."),
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
        self._check_sizes()
        self._check_positions()
        self._check_attention()
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def _check_sizes(self) -> None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
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

    def _check_positions(self) -> None:
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in (0, 1], got {self.rotary_pct}")
        if self.pos_emb == "rotary" and self.rotary_dim < 2:
            raise ValueError(
                f"rotary_pct {self.rotary_pct} of head size {self.head_dim} leaves fewer than "
                "2 rotary dimensions"
            )
        if self.max_positions < self.seq_length:
            raise ValueError(
                f"max_position_embeddings ({self.max_position_embeddings}) is smaller than "
                f"seq_length ({self.seq_length})"
            )
        if self.sliding_window_width is not None and self.sliding_window_width <= 0:
            raise ValueError(
                f"sliding_window_width must be positive, not {self.sliding_window_width}"
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
        return self.hidden_size // self.num_attention_heads

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
