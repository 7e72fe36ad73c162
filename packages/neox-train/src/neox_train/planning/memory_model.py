"""Bytes a training rank holds: model states (weights, gradients, optimizer) and activations.

Model states follow the ZeRO accounting (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations
Toward Training Trillion Parameter Models") with what DeepSpeed actually keeps for neox's configs,
per parameter P held by the rank and D data-parallel replicas:

    weights      w P            w = 2 (fp16, bf16) or 4 (fp32); / D under ZeRO-3
    gradients    w P            / D under ZeRO-2 and 3
    optimizer    (m + 4 k) P    k moments of 4 bytes (Adam 2, Lion 1, SGD 1 with momentum);
                                m = 4 for the fp32 master copy, kept with 16-bit weights or any
                                ZeRO stage; / D under ZeRO >= 1 (and under bf16 pipelines, whose
                                DeepSpeed optimizer partitions like ZeRO-1); on the CPU when
                                the optimizer is offloaded

Activations follow Korthikanti et al. (2022, "Reducing Activation Recomputation in Large
Transformer Models"), Section 4: the tensors each layer saves for its backward pass, counted for
neox's block as it runs (SDPA/flash attention, which keeps no (seq x seq) matrix). Per layer and
micro-batch, with E = seq x micro batch x hidden elements, A the same with the query width
(heads x head_dim, which is hidden unless kv_channels says otherwise), w the activation width, t
the tensor-parallel size, r = kv heads / heads and f = MLP inner width / hidden:

    norms      w E per norm input and output (RMSNorm also keeps its normalised x, and its
               input in fp32); the parallel residual's two norms read one input
    attention  w A (1 + 2r) / t  QKV output      + w A (1 + r) / t  rotated q and k
               + 2 w A / t  attention output and its copy into the output projection
               + 4 E heads / (hidden t)  the attention's log-sum-exp
    qk norms   (use_qk_layernorm) each norm keeps its input (the query's copy out of the QKV
               output; the key is a view of it, copied for a norm over all heads), RMSNorm its
               normalised q and k (w A (1 + r) / t) and its input in fp32, and per-head (per
               token over all heads) statistics
    soft caps  (attention_logit_softcapping) the attention written out keeps, per head, the
               (seq x seq) capped scores and float32 probabilities (and a 16-bit copy)
    MLP        2 w E f / t plain (activation input and output), 4 w E f / t gated
    dropout    E bytes per mask when hidden_dropout > 0; attention_dropout > 0 adds the
               (seq x seq) probabilities: (2 w + 1) E seq heads / (hidden t) (an estimate)

The last stage adds its final norm and the loss's fp32 softmax over the vocabulary shard
(4 seq x batch x vocab / t). With activation checkpointing every chunk of checkpoint_num_layers
keeps only its input (w E) and the backward pass recomputes one chunk at a time, so the peak
adds one chunk's full activations. Under sequence parallelism (Section 4.2.2) each rank holds
1 / t of the sequence between the tensor-parallel regions: the norms, the hidden dropout masks,
the embedding's mask, the final norm and a checkpointed chunk's input are / t (a column-parallel
layer keeps its part of the input, not the gathered sequence). These formulas are checked
against the tensors a small model saves on CPU (packages/neox-train/tests/test_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox_model import ModelConfig
from neox_model.parameters import block_norms

Dtype = Literal["fp32", "fp16", "bf16"]
FP32 = 4


def width(dtype: Dtype) -> int:
    """Bytes per weight or activation element in this training precision."""
    return FP32 if dtype == "fp32" else 2


@dataclass(frozen=True)
class ModelStates:
    parameters: int  # bytes of weights on one GPU
    gradients: int
    optimizer: int  # on the GPU
    optimizer_on_cpu: int  # offloaded to the host

    @property
    def on_gpu(self) -> int:
        return self.parameters + self.gradients + self.optimizer


@dataclass(frozen=True)
class Training:
    """What the memory of a rank depends on besides the model."""

    dtype: Dtype
    zero_stage: int
    data_parallel: int
    moments: int  # optimizer moments kept per parameter
    offload: bool  # the optimizer lives on the CPU
    pipeline: bool


def model_state_bytes(parameters: int, training: Training) -> ModelStates:
    """Weights, gradients and optimizer state of a rank holding `parameters` weights."""
    w, d, stage = width(training.dtype), training.data_parallel, training.zero_stage
    master = FP32 if training.dtype != "fp32" or stage >= 1 else 0
    optimizer = (master + FP32 * training.moments) * parameters
    if stage >= 1 or (training.pipeline and training.dtype == "bf16"):
        optimizer = _split(optimizer, d)
    weights = _split(w * parameters, d) if stage == 3 else w * parameters
    gradients = _split(w * parameters, d) if stage >= 2 else w * parameters
    if training.offload:
        return ModelStates(weights, gradients, 0, optimizer)
    return ModelStates(weights, gradients, optimizer, 0)


def _split(total: int, parts: int) -> int:
    return -(-total // parts)


@dataclass(frozen=True)
class Tokens:
    """The activations' shape on one rank: one micro-batch of seq_length tokens."""

    seq: int
    batch: int
    tensor_parallel: int
    dtype: Dtype
    sequence_parallel: bool = False

    @property
    def count(self) -> int:
        return self.seq * self.batch

    @property
    def between_regions(self) -> int:
        """Tokens whose activations the rank holds between the tensor-parallel regions (norms,
        dropout, residual): all, or its 1 / t of the sequence under sequence parallelism."""
        return self.count // self.tensor_parallel if self.sequence_parallel else self.count


def block_activation_bytes(config: ModelConfig, tokens: Tokens) -> int:
    """Bytes one transformer block saves for backward, for one micro-batch (no recompute)."""
    w, t, n = width(tokens.dtype), tokens.tensor_parallel, tokens.count
    e = n * config.hidden_size
    a = n * config.attention_width
    r = config.kv_heads / config.num_attention_heads
    f = config.ffn_size / config.hidden_size
    attention = w * a * (1 + 2 * r) / t + FP32 * n * config.num_attention_heads / t
    if config.pos_emb == "rotary":  # rotated q and k; the output is copied for the projection
        attention += w * a * (1 + r) / t + 2 * w * a / t + _rotary_table_bytes(config, tokens)
    else:  # q, k, v stay views of the QKV output, and the output projection reads a view
        attention += w * a * (1 if r < 1 else 0) / t + w * a / t
    if config.use_qk_layernorm:
        attention += _qk_norm_bytes(config, tokens)
    if config.attention_logit_softcapping is not None:  # attention written out, not SDPA
        attention += _softcapped_attention_bytes(config, tokens)
    mlp = (4 if config.gated else 2) * w * e * f / t
    dropout = 2 * tokens.between_regions * config.hidden_size if config.hidden_dropout > 0 else 0
    if config.attention_dropout > 0:
        heads = config.num_attention_heads / t
        dropout += int((2 * w + 1) * n * tokens.seq * heads)
    return int(_block_norm_bytes(config, tokens) + attention + mlp + dropout)


def _rotary_table_bytes(config: ModelConfig, tokens: Tokens) -> int:
    """cos and sin cast to a 16-bit training precision, once for q and once for k."""
    w = width(tokens.dtype)
    return 0 if w == FP32 else 4 * tokens.seq * config.rotary_dim * w


def _block_norm_bytes(config: ModelConfig, tokens: Tokens) -> int:
    """The block's norms (two, or four with sandwich norms): inputs (shared by the parallel
    residual's two norms), RMSNorm's normalised intermediate, and the inputs of attention and
    MLP (a pre norm's output; with post norms the block input and the first residual sum)."""
    w, e = width(tokens.dtype), tokens.between_regions * config.hidden_size
    norms = block_norms(config)
    rms = config.norm == "rmsnorm"
    input_width = FP32 if rms else w
    shared = config.gpt_j_residual and (not rms or w == FP32)  # one saved copy of x
    inputs = 1 if config.gpt_j_tied or shared else norms
    outputs = 1 if config.gpt_j_tied else 2
    extra = norms * _normalised_width(config, w) * e
    statistics = norms * _norm_statistics(config, tokens)
    return inputs * input_width * e + outputs * w * e + extra + statistics


def _softcapped_attention_bytes(config: ModelConfig, tokens: Tokens) -> float:
    """Soft-capped attention, written out, over SDPA's: per head a (seq x seq) matrix of capped
    scores and the float32 probabilities (and their 16-bit copy), without SDPA's log-sum-exp
    and its separate copies of the rotated queries and keys."""
    w, t, n = width(tokens.dtype), tokens.tensor_parallel, tokens.count
    heads = config.num_attention_heads / t
    r = config.kv_heads / config.num_attention_heads
    matrices = (w + FP32 + (w if w != FP32 else 0)) * n * heads * tokens.seq
    return matrices - w * n * config.attention_width * (1 + r) / t - FP32 * n * heads


def _qk_norm_bytes(config: ModelConfig, tokens: Tokens) -> float:
    """The per-head query and key norms: their inputs (the keys are a view of the QKV output,
    the queries too unless grouped-query attention copies them out), RMSNorm's fp32 copies and
    normalised outputs, and every head's statistics."""
    w, t, n = width(tokens.dtype), tokens.tensor_parallel, tokens.count
    r = config.kv_heads / config.num_attention_heads
    a = n * config.attention_width / t
    both = a * (1 + r)  # q and k elements
    rows = n * (config.num_attention_heads + config.kv_heads) / t
    query_copy = w * a if r < 1 else 0.0
    if not config.qk_layernorm_per_head:  # one RMSNorm over all of the rank's query heads, one
        # over its keys: the keys are copied out of the QKV output, the normalised values kept in
        # float32 (the weight multiplies before rounding), one statistic per token
        inputs = query_copy + w * a * r if w == FP32 else FP32 * both
        return inputs + FP32 * both + FP32 * 2 * n
    if config.norm != "rmsnorm":
        statistics = 2 * w if config.norm == "layernorm" else w
        return query_copy + statistics * rows
    inputs = query_copy if w == FP32 else FP32 * both
    return inputs + w * both + FP32 * rows


def _norm_statistics(config: ModelConfig, tokens: Tokens) -> int:
    """Per-token statistics a norm keeps: LayerNorm's fp32 mean and 1/std, RMSNorm's 1/rms,
    ScaleNorm's norm."""
    per_token = {"layernorm": 2 * FP32, "rmsnorm": FP32, "scalenorm": width(tokens.dtype)}
    return per_token[config.norm] * tokens.between_regions


def head_activation_bytes(config: ModelConfig, tokens: Tokens, padded_vocab: int) -> int:
    """The last stage's final norm, the soft-capped logits (final_logit_softcapping: tanh
    keeps its output) and the loss's fp32 softmax over this rank's vocabulary."""
    w, e = width(tokens.dtype), tokens.between_regions * config.hidden_size
    rms = config.norm == "rmsnorm"
    norm = (FP32 if rms else w) * e + w * e + (_normalised_width(config, w) * e)
    norm += _norm_statistics(config, tokens)
    logits = tokens.count * padded_vocab // tokens.tensor_parallel
    capped = w * logits if config.final_logit_softcapping is not None else 0
    return norm + capped + FP32 * logits


def _normalised_width(config: ModelConfig, w: int) -> int:
    """Bytes per element of the normalised x a norm keeps: none for LayerNorm, float32 for
    Gemma's and OLMo 2's RMSNorm (the weight applied before rounding), else the activation
    width."""
    if config.norm == "layernorm":
        return 0
    return FP32 if config.rmsnorm_unit_offset or config.rmsnorm_fp32_weight else w


def embedding_activation_bytes(config: ModelConfig, tokens: Tokens) -> int:
    """The first stage's token ids (int64), the embedding dropout mask, and in fp32 the rotary
    tables every layer reads (16-bit layers keep their own casts instead)."""
    mask = tokens.between_regions * config.hidden_size if config.hidden_dropout > 0 else 0
    fp32_rotary = config.pos_emb == "rotary" and tokens.dtype == "fp32"
    rotary = 2 * FP32 * tokens.seq * config.rotary_dim if fp32_rotary else 0
    return 8 * tokens.count + mask + rotary


def checkpoint_input_bytes(config: ModelConfig, tokens: Tokens) -> int:
    """What a checkpointed chunk of layers keeps: its input."""
    return width(tokens.dtype) * tokens.between_regions * config.hidden_size
