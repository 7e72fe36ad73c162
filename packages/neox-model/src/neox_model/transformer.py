"""A GPT-NeoX-family decoder (Black et al., 2022, "GPT-NeoX-20B"), read top to bottom.

    tokens -> embed_in (+ learned or sinusoidal positions) -> dropout
           -> num_layers x Block        (rotary or ALiBi inside attention)
           -> final_layer_norm -> embed_out (or the tied input embedding) -> logits

A Block is sequential, x + attn(n1(x)) then x + mlp(n2(x)), or GPT-J's parallel residual,
x + attn(n1(x)) + mlp(n2(x)) (`gpt_j_residual`; `gpt_j_tied` uses one norm for both); with
`norm_placement` post the norms act on the outputs instead, x + n1(attn(x)) (OLMo 2), and with
sandwich on both sides, x + n1'(attn(n1(x))) (Gemma 2). Under
tensor parallelism (a `TPGroup` handed in) the embedding, projections and output layer hold this
rank's shard; with no group they are plain layers. With `sequence_parallel` (Korthikanti et al.,
2022) everything between the tensor-parallel regions (embedding output, dropout, norms,
residual adds, the final norm) holds only this rank's part of the sequence, and the attention
still sees the whole sequence at its global positions; the ranks must then draw different
dropout masks (seed each tensor-parallel rank differently). It is for training: a KV cache needs
a model built without it, and the weights are the same either way. Module names follow Hugging
Face GPTNeoX (without its `gpt_neox.` prefix) so that weight conversion is a key map.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from neox_model import preference
from neox_model.attention import Rope, SelfAttention
from neox_model.config import ModelConfig
from neox_model.initialization import init_weights
from neox_model.kv_cache import KVCache
from neox_model.mlp import MLP
from neox_model.moe import MoE, MoELosses, layer_stats, moe_aux_loss, moe_config_of
from neox_model.norms import build_norm
from neox_model.rotary import RotaryEmbedding
from neox_model.sinusoidal import SinusoidalEmbedding
from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    TPGroup,
    VocabParallelEmbedding,
    column_parallel_linear,
    gather_from_tp,
    next_token_loss,
    sequence_part,
    sum_replicated_gradients,
)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap) (Gemma 2's final_logit_softcapping), or the logits unchanged."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


class WithEmbeddings(nn.Module):
    """A module holding the input side of the model: token embeddings, learned or sinusoidal
    positions and the embedding dropout (the whole model, or a pipeline's first stage)."""

    embed_in: VocabParallelEmbedding
    position_embeddings: nn.Embedding | None
    sinusoidal: SinusoidalEmbedding | None
    embed_dropout: nn.Dropout
    embedding_scale: float | None
    sequence_parallel: bool

    def add_embeddings(
        self, config: ModelConfig, tp: TPGroup, vocab: int, sequence_parallel: bool = False
    ) -> None:
        hidden = config.hidden_size
        self.sequence_parallel = sequence_parallel and tp.size > 1
        if self.sequence_parallel:
            tp.divide(config.seq_length, "seq_length")  # sequence parallelism splits it
        self.embed_in = VocabParallelEmbedding(
            vocab, hidden, tp, sequence_parallel=self.sequence_parallel
        )
        self.position_embeddings = (
            nn.Embedding(config.max_positions, hidden) if config.pos_emb == "learned" else None
        )
        self.sinusoidal = SinusoidalEmbedding(hidden) if config.pos_emb == "sinusoidal" else None
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.embedding_scale = hidden**0.5 if config.scale_embeddings else None

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids at `positions` (seq,) -> (batch, seq, hidden), or this rank's part
        of the sequence, (batch, seq / tp, hidden), under sequence parallelism."""
        if self.sequence_parallel:
            tp = self.embed_in.tp
            if input_ids.shape[-1] % tp.size:
                raise ValueError(
                    f"sequence_parallel splits the sequence over the {tp.size} tensor-parallel "
                    f"ranks, but the input has {input_ids.shape[-1]} tokens: give a length "
                    f"that is a multiple of {tp.size}"
                )
            positions = sequence_part(positions, tp, dim=-1)  # this rank's positions
        x = self.embed_in(input_ids)  # (batch, seq or seq / tp, hidden)
        if self.embedding_scale is not None:  # Gemma: sqrt(hidden) rounded to the weights' type
            x = x * torch.tensor(self.embedding_scale, dtype=x.dtype)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(positions)
        if self.sinusoidal is not None:
            x = x + self.sinusoidal(positions).to(x.dtype)
        return cast(torch.Tensor, self.embed_dropout(x))


class Block(nn.Module):
    """Norms by `norm_placement`: `input_layernorm` before attention and
    `post_attention_layernorm` before the MLP (pre, sandwich; GPT-NeoX's names), and
    `attention_output_layernorm` / `mlp_output_layernorm` on their outputs (post, sandwich)."""

    def __init__(
        self,
        config: ModelConfig,
        tp: TPGroup,
        index: int,
        *,
        sequence_parallel: bool = False,
        ep: TPGroup | None = None,
    ) -> None:
        """`ep`: the expert-parallel group of an MoE layer's experts (None: no expert
        parallelism)."""
        super().__init__()
        self.parallel_residual = config.gpt_j_residual
        before = config.norm_placement != "post"
        after = config.norm_placement != "pre"
        self.input_layernorm = build_norm(config) if before else None
        self.attention = SelfAttention(config, tp, index, sequence_parallel=sequence_parallel)
        self.attention_output_layernorm = build_norm(config) if after else None
        self.post_attention_layernorm = (
            build_norm(config) if before and not config.gpt_j_tied else None
        )
        self.mlp: MLP | MoE
        if config.is_moe_layer(index):
            if sequence_parallel and tp.size > 1:
                raise ValueError(
                    "mixture-of-experts layers do not run under sequence parallelism yet: set "
                    "sequence_parallel false"
                )
            self.mlp = MoE(
                moe_config_of(config),
                config.hidden_size,
                config.expert_ffn_size,
                config.activation,
                config.use_bias_in_mlp,
                tp,
                ep,
            )
        else:
            self.mlp = MLP(config, tp, sequence_parallel=sequence_parallel)
        self.mlp_output_layernorm = build_norm(config) if after else None
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        positions: torch.Tensor,
        cache: KVCache | None,
        moe_stats: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (batch, seq, hidden) -> (batch, seq, hidden), or this rank's (batch, seq / tp,
        hidden) part under sequence parallelism; `positions` (seq,) are the whole sequence's.
        A mixture-of-experts layer appends its `layer_stats` to `moe_stats` when given."""
        normed = x if self.input_layernorm is None else self.input_layernorm(x)
        attn = self.attention(normed, rope, positions, cache)
        if self.attention_output_layernorm is not None:
            attn = self.attention_output_layernorm(attn)
        attn = self.dropout(attn)
        if self.parallel_residual:
            norm2 = self.post_attention_layernorm
            mlp_in = normed if norm2 is None else norm2(x)
            return x + attn + self.dropout(self._mlp(mlp_in, moe_stats))
        x = x + attn
        norm2 = self.post_attention_layernorm
        out = self._mlp(x if norm2 is None else norm2(x), moe_stats)
        if self.mlp_output_layernorm is not None:
            out = self.mlp_output_layernorm(out)
        return x + self.dropout(out)

    def _mlp(self, x: torch.Tensor, moe_stats: list[torch.Tensor] | None) -> torch.Tensor:
        if isinstance(self.mlp, MLP):
            return cast(torch.Tensor, self.mlp(x))
        out = self.mlp(x)
        if moe_stats is not None:
            moe_stats.append(layer_stats(out))
        return out.output


class Transformer(WithEmbeddings):
    """Decoder-only language model: input_ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        tp: TPGroup | None = None,
        seed: int = 0,
        padded_vocab: int | None = None,
        sequence_parallel: bool = False,
        checkpoint_num_layers: int = 0,
        ep: TPGroup | None = None,
    ) -> None:
        """`padded_vocab` overrides the vocabulary padding (a checkpoint saved at another
        tensor-parallel size keeps the rows it was padded to). `sequence_parallel` splits the
        sequence over `tp` outside its tensor-parallel regions (nothing at size 1).
        `checkpoint_num_layers`: activation checkpointing in training, that many blocks per
        recomputed chunk (0: off), as a pipeline's `activation_checkpoint_interval`. `ep`: the
        expert-parallel group the MoE layers' experts are split over (None: none), carved from
        the data-parallel ranks; each rank runs its own tokens (see `neox_model.moe`)."""
        super().__init__()
        self.config = config
        self.tp = tp = tp or TPGroup.single()
        hidden = config.hidden_size
        self.vocab = padded_vocab or config.padded_vocab(tp.size)
        self.add_embeddings(config, tp, self.vocab, sequence_parallel)
        sp = self.sequence_parallel
        self.rotary = (
            RotaryEmbedding(
                config.rotary_dim,
                config.rotary_emb_base,
                config.rotary_save_freqs_buffer,
                max_positions=config.max_positions,
                scaling=config.rope_scaling,
            )
            if config.pos_emb == "rotary"
            else None
        )
        self.layers = nn.ModuleList(
            Block(config, tp, i, sequence_parallel=sp, ep=ep) for i in range(config.num_layers)
        )
        self.final_layer_norm = build_norm(config)
        self.embed_out = (
            ColumnParallelLinear(hidden, self.vocab, tp, bias=False, sequence_parallel=sp)
            if config.no_weight_tying and not config.value_head
            else None
        )
        # a reward model's score per position, replicated on the tensor-parallel ranks
        self.score = nn.Linear(hidden, 1, bias=False) if config.value_head else None
        if self.score is not None and sp:
            raise ValueError("a value head (reward model) does not run under sequence_parallel")
        if sp:  # norms, row-parallel biases, positions: each rank sees its positions only
            sum_replicated_gradients(self, tp)
        self.checkpoint_num_layers = checkpoint_num_layers
        # the last forward's auxiliary losses (unweighted) and language-model loss, for metrics
        self.moe_losses: MoELosses | None = None
        self.lm_loss: torch.Tensor | None = None
        if self.embed_in.weight.device.type != "meta":
            self.init_weights(seed)

    @property
    def blocks(self) -> list[Block]:
        return [cast(Block, layer) for layer in self.layers]

    def init_weights(self, seed: int) -> None:
        """Initialise every weight from (seed, its name); a tensor-parallel rank keeps its shard."""
        init_weights(self, self.config, seed)

    def compile_blocks(self) -> None:
        """Compile every block with torch.compile, in place (works on CPU and GPU)."""
        for block in self.blocks:
            block.compile()

    def new_cache(
        self, batch: int, max_length: int | None = None, *, static: bool = False
    ) -> KVCache:
        """An empty KV cache for incremental decoding of `batch` sequences; `static` for a
        compiled decoding step (see `KVCache`)."""
        weight: torch.Tensor = self.embed_in.weight
        attention = self.blocks[0].attention
        if static and "flash" in self.config.attention_types:
            raise ValueError(
                "a static KV cache needs attention_config without flash (flash-attn cannot mask "
                "the cache's unwritten tail); use a growing cache (static=False)"
            )
        return KVCache(
            self.config.num_layers,
            batch,
            attention.groups,
            attention.head_dim,
            max_length or self.config.max_positions,
            dtype=weight.dtype,
            device=weight.device,
            static=static,
        )

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """input_ids (batch, seq) after the cached tokens -> final normed (batch, seq, hidden),
        or this rank's (batch, seq / tp, hidden) part under sequence parallelism."""
        return self._hidden(input_ids, cache)[0]

    def _hidden(
        self, input_ids: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states` and the MoE layers' `layer_stats` summed (None without MoE)."""
        if cache is not None and self.sequence_parallel:
            raise ValueError(
                "a KV cache needs a model built without sequence_parallel (it is for training; "
                "build the model for generation or evaluation without it)"
            )
        seq = input_ids.shape[1]
        start = 0 if cache is None or cache.static else cache.length  # static: checked on use
        if start + seq > self.config.max_positions:
            raise ValueError(f"positions up to {start + seq} exceed {self.config.max_positions}")
        if cache is None:
            positions = torch.arange(seq, device=input_ids.device)
        else:
            positions = cache.positions(seq)
        x = self.embed(input_ids, positions)  # (batch, seq or seq / tp, hidden)
        rope = self.rotary(positions) if self.rotary is not None else None
        chunk = self.checkpoint_num_layers if self.training and cache is None else 0
        stats: torch.Tensor | None = None
        for start_layer in range(0, len(self.layers), chunk or len(self.layers)):
            stop = start_layer + (chunk or len(self.layers))
            args = (x, rope, positions, cache, start_layer, stop)
            x, part = (
                checkpoint(self._run, *args, use_reentrant=False) if chunk else self._run(*args)
            )
            if part is not None:
                stats = part if stats is None else stats + part
        if cache is not None:
            cache.advance(seq)
        return cast(torch.Tensor, self.final_layer_norm(x)), stats

    def _run(
        self,
        x: torch.Tensor,
        rope: Rope,
        positions: torch.Tensor,
        cache: KVCache | None,
        start: int,
        stop: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blocks start..stop: their output and their MoE layers' stats summed (or None)."""
        moe_stats: list[torch.Tensor] = []
        for block in self.blocks[start:stop]:
            x = block(x, rope, positions, cache, moe_stats)
        return x, (torch.stack(moe_stats).sum(dim=0) if moe_stats else None)

    def logits(self, hidden: torch.Tensor, gather: bool = True) -> torch.Tensor:
        """(batch, seq, hidden) -> logits over the padded vocabulary, or this rank's shard; under
        sequence parallelism `hidden` is this rank's (batch, seq / tp, hidden) part and the
        logits cover the whole sequence. A value head's: (batch, seq) scores."""
        if self.score is not None:
            return cast(torch.Tensor, self.score(hidden)).squeeze(-1)
        if self.embed_out is not None:
            local = self.embed_out(hidden)  # (batch, seq, vocab / tp)
        else:  # tied: the embedding's shard of the vocabulary is this rank's output shard
            local = column_parallel_linear(
                hidden,
                self.embed_in.weight,
                None,
                self.tp,
                sequence_parallel=self.sequence_parallel,
            )
        local = softcap(local, self.config.final_logit_softcapping)
        return gather_from_tp(local, self.tp) if gather else local

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        *,
        logps: Literal["sequence", "token"] | None = None,
        fp32: bool = True,
    ) -> torch.Tensor:
        """Logits (batch, seq, padded vocab); with `labels` (batch, seq), the mean next-token
        cross entropy instead over the labels that are not IGNORE_INDEX, computed without
        gathering a tensor-parallel vocabulary, plus in training a mixture of experts' weighted
        load-balancing and z losses (`moe_loss_coeff`, `moe_z_loss_coeff`). With labels and
        `logps` "sequence", each sequence's summed log-probability of its labelled tokens
        instead, (batch,); "token": each labelled token's, (batch, seq), 0 elsewhere; from
        float32 logits with `fp32` (`neox_model.preference`; the auxiliary losses left out)."""
        hidden, stats = self._hidden(input_ids, cache)
        if labels is None:
            return self.logits(hidden)
        if self.score is not None:
            raise ValueError(
                "a value-head model (a reward model) scores sequences: call it without labels"
            )
        local = self.logits(hidden, gather=False)
        if logps == "sequence":
            return preference.sequence_logps(local, labels, self.tp, fp32)
        if logps == "token":
            return preference.token_logps(local, labels, self.tp, fp32)
        loss = next_token_loss(local, labels, self.tp)
        if stats is None:
            return loss
        return self._with_aux_losses(loss, stats, input_ids.numel())

    def _with_aux_losses(
        self, loss: torch.Tensor, stats: torch.Tensor, tokens: int
    ) -> torch.Tensor:
        """The language-model loss plus, in training, the weighted auxiliary losses (both kept,
        unweighted, in `lm_loss` and `moe_losses` for metrics)."""
        config = self.config
        aux = MoELosses.of(stats, config.moe_layers, tokens, config.moe_num_experts)
        self.lm_loss, self.moe_losses = (
            loss.detach(),
            aux.detached(),
        )
        if not self.training:
            return loss
        return loss + moe_aux_loss(config, aux, loss.dtype)
