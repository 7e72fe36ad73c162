"""A GPT-NeoX-family decoder (Black et al., 2022, "GPT-NeoX-20B"), read top to bottom.

    tokens -> embed_in (+ learned positions) -> dropout
           -> num_layers x Block                 (rotary applied inside attention)
           -> final_layer_norm -> embed_out      (or the tied input embedding)

A Block is either sequential, x + attn(ln1(x)) then x + mlp(ln2(x)), or GPT-J's parallel
residual, x + attn(ln1(x)) + mlp(ln2(x)) (`gpt_j_residual`). Module names follow Hugging Face
GPTNeoX (without its `gpt_neox.` prefix) so that weight conversion is a key map.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from neox_model.attention import SelfAttention
from neox_model.config import ModelConfig
from neox_model.initialization import init_std
from neox_model.mlp import MLP
from neox_model.rotary import RotaryEmbedding

Rope = tuple[torch.Tensor, torch.Tensor] | None


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.parallel_residual = config.gpt_j_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = SelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layernorm_epsilon
        )
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        """x (batch, seq, hidden) -> (batch, seq, hidden)."""
        attn = self.dropout(self.attention(self.input_layernorm(x), rope))
        if self.parallel_residual:
            return x + attn + self.dropout(self.mlp(self.post_attention_layernorm(x)))
        x = x + attn
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class Transformer(nn.Module):
    """Decoder-only language model: input_ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, config: ModelConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        hidden, vocab = config.hidden_size, config.padded_vocab_size
        self.embed_in = nn.Embedding(vocab, hidden)
        self.position_embeddings = (
            nn.Embedding(config.max_positions, hidden) if config.pos_emb == "learned" else None
        )
        self.rotary = (
            RotaryEmbedding(config.rotary_dim, config.rotary_emb_base)
            if config.pos_emb == "rotary"
            else None
        )
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(hidden, eps=config.layernorm_epsilon)
        self.embed_out = nn.Linear(hidden, vocab, bias=False) if config.no_weight_tying else None
        # activation checkpointing: layers per checkpointed chunk, 0 = off; set by the trainer
        self.checkpoint_num_layers = 0
        if self.embed_in.weight.device.type != "meta":
            self.init_weights(torch.Generator().manual_seed(seed))

    @property
    def blocks(self) -> list[Block]:
        return [cast(Block, layer) for layer in self.layers]

    def init_weights(self, generator: torch.Generator) -> None:
        """Initialise every parameter from `generator`, in module order (deterministic)."""
        in_std = init_std(self.config.init_method, self.config)
        out_std = init_std(self.config.output_layer_init_method, self.config)
        outputs = {id(m) for b in self.blocks for m in (b.attention.dense, b.mlp.dense_4h_to_h)}
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.reset_parameters()
                elif isinstance(module, nn.Linear | nn.Embedding):
                    std = out_std if id(module) in outputs else in_std
                    module.weight.normal_(0.0, std, generator=generator)
                    if isinstance(module, nn.Linear) and module.bias is not None:
                        module.bias.zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        if seq > self.config.max_positions:
            raise ValueError(f"sequence of {seq} tokens exceeds {self.config.max_positions}")
        positions = torch.arange(seq, device=input_ids.device)
        x = self.embed_in(input_ids)  # (batch, seq, hidden)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(positions)
        x = self.embed_dropout(x)
        rope = self.rotary(positions) if self.rotary is not None else None
        chunk = self.checkpoint_num_layers if self.training else 0
        if chunk:
            for start in range(0, len(self.layers), chunk):
                x = checkpoint(self._run_layers, x, rope, start, start + chunk, use_reentrant=False)
        else:
            x = self._run_layers(x, rope, 0, len(self.layers))
        x = self.final_layer_norm(x)
        weight = self.embed_in.weight if self.embed_out is None else self.embed_out.weight
        return F.linear(x, weight)  # (batch, seq, padded_vocab)

    def _run_layers(self, x: torch.Tensor, rope: Rope, start: int, stop: int) -> torch.Tensor:
        for layer in self.blocks[start:stop]:
            x = layer(x, rope)
        return x
