"""`ModelConfig`: the architecture hyper-parameters of a GPT-NeoX-family decoder.

Field names are GPT-NeoX's config keys, so a GPT-NeoX YAML maps onto this class key for key.
Only architecture lives here: no paths, no parallel degrees, no precision.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

PosEmb = Literal["rotary", "learned", "none"]
InitMethod = Literal["normal", "scaled_normal", "small_init", "wang_init"]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class ModelConfig:
    """A dense decoder-only transformer as GPT-NeoX describes it."""

    num_layers: int = field(metadata=_doc("Number of transformer blocks."))
    hidden_size: int = field(metadata=_doc("Width of the residual stream."))
    num_attention_heads: int = field(metadata=_doc("Attention heads per block."))
    seq_length: int = field(metadata=_doc("Training sequence length in tokens."))
    max_position_embeddings: int | None = field(
        default=None, metadata=_doc("Longest position the model supports; default seq_length.")
    )
    intermediate_size: int | None = field(
        default=None, metadata=_doc("MLP inner width; default 4 * hidden_size.")
    )
    pos_emb: PosEmb = field(default="learned", metadata=_doc("Position encoding."))
    rotary_pct: float = field(
        default=1.0, metadata=_doc("Fraction of each head's dimensions that rotary rotates.")
    )
    rotary_emb_base: int = field(default=10000, metadata=_doc("Rotary frequency base (theta)."))
    gpt_j_residual: bool = field(
        default=False, metadata=_doc("Parallel residual: x + attn(ln1(x)) + mlp(ln2(x)).")
    )
    norm: Literal["layernorm"] = field(default="layernorm", metadata=_doc("Normalisation layer."))
    layernorm_epsilon: float = field(default=1e-5, metadata=_doc("LayerNorm epsilon."))
    activation: Literal["gelu"] = field(default="gelu", metadata=_doc("MLP activation."))
    no_weight_tying: bool = field(
        default=False, metadata=_doc("Untie the output layer from the input embedding.")
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
        default=128, metadata=_doc("Pad the vocabulary to a multiple of this.")
    )
    vocab_size: int | None = field(
        default=None,
        metadata=_doc("Tokenizer vocabulary size before padding; set from the tokenizer."),
    )

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
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
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that rotary rotates (GPT-NeoX: int(head_dim * rotary_pct))."""
        return int(self.head_dim * self.rotary_pct)

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def max_positions(self) -> int:
        return self.max_position_embeddings or self.seq_length

    @property
    def padded_vocab_size(self) -> int:
        """The vocabulary padded up to a multiple of make_vocab_size_divisible_by."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set: build the config with with_vocab(n)")
        multiple = self.make_vocab_size_divisible_by
        return math.ceil(self.vocab_size / multiple) * multiple

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
        return cls(**values)
