"""Hugging Face `MixtralForCausalLM` and `Qwen2MoeForCausalLM` <-> neox.

Both are Llama's block (`llama.KEYS` for attention, norms and any dense MLP) whose MLP is a
mixture of experts. Their files keep each expert apart, a gated MLP without biases:

- Mixtral (Jiang et al., 2024): `block_sparse_moe.gate` (the router, experts x hidden) and
  `block_sparse_moe.experts.E.w1` (gate), `w3` (up), `w2` (down), on every layer; the router
  takes the top `num_experts_per_tok` of the float32 softmax and renormalises them (neox's
  `moe_router_type: softmax_topk`). `router_jitter_noise` scales the experts' input as well as
  the router's, which neox's `moe_jitter_eps` does not: a model with it is refused.
- Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): `mlp.gate` and `mlp.experts.E.gate_proj`,
  `up_proj`, `down_proj` (each `moe_intermediate_size` wide), renormalised only with
  `norm_topk_prob`, plus a shared expert every token passes through (`mlp.shared_expert.*`,
  `shared_expert_intermediate_size` wide) scaled by sigmoid(`mlp.shared_expert_gate`). Layers
  that are not sparse (`decoder_sparse_step`, `mlp_only_layers`) keep a dense MLP
  `intermediate_size` wide; neox puts experts on layers 0, k, 2k, ... (`moe_expert_interval`
  k, GPT-NeoX's rule), so the sparse layers must be those.

neox stacks the experts: `mlp.experts.w_in` (experts, hidden, 2 x inner) holding [up | gate]
along its last dimension, `mlp.experts.w_out` (experts, inner, hidden); Hugging Face's (out, in)
matrices are their transposes. The load-balancing loss is transformers' (over all layers'
tokens together, `moe_loss_coeff` = `router_aux_loss_coef`), so an imported model fine-tunes with
the loss it was trained with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from neox_convert import llama, qwen
from neox_convert.errors import ConversionError
from neox_convert.key_map import StateDict, from_format, to_format
from neox_convert.llama import (
    NO_BIASES,
    bias_problems,
    common_hf_config,
    common_model_config,
    family_problems,
)
from neox_convert.mistral import hf_window, window_problems
from neox_model import ModelConfig


@dataclasses.dataclass(frozen=True)
class ExpertNames:
    """Where a family keeps one MoE layer's tensors, after the block prefix."""

    router: str  # the router's weight
    expert: str  # expert e's prefix, with "{}" for e
    gate: str  # after `expert`: the gate, up and down projections' weights
    up: str
    down: str
    shared: str | None = None  # the shared expert's prefix (gate, up, down as Llama's MLP)
    shared_gate: str | None = None  # the shared expert's gate's weight


MIXTRAL = ExpertNames(
    "block_sparse_moe.gate.weight", "block_sparse_moe.experts.{}.", "w1.weight", "w3.weight",
    "w2.weight",
)  # fmt: skip
QWEN2_MOE = ExpertNames(
    "mlp.gate.weight", "mlp.experts.{}.", "gate_proj.weight", "up_proj.weight",
    "down_proj.weight", "mlp.shared_expert.", "mlp.shared_expert_gate.weight",
)  # fmt: skip
MOE_NAMES = (".mlp.router.", ".mlp.experts.", ".mlp.shared_expert")  # neox's, in a block


def _expert_pieces(w_in: torch.Tensor, w_out: torch.Tensor, e: int) -> tuple[torch.Tensor, ...]:
    """Expert e's (gate, up, down) as Hugging Face's (out, in) matrices."""
    up, gate = w_in[e].t().chunk(2, dim=0)
    return gate.contiguous(), up.contiguous(), w_out[e].t().contiguous()


def _to_hf(state: StateDict, config: ModelConfig, names: ExpertNames) -> StateDict:
    dense = {k: v for k, v in state.items() if not any(m in k for m in MOE_NAMES)}
    out = to_format(dense, config, llama.KEYS)
    for i in range(config.num_layers):
        if not config.is_moe_layer(i):
            continue
        ours, theirs = f"layers.{i}.mlp.", llama.KEYS.layer_prefix.format(i)
        out[theirs + names.router] = state[ours + "router.weight"]
        w_in, w_out = state[ours + "experts.w_in"], state[ours + "experts.w_out"]
        for e in range(config.moe_num_experts):
            expert = theirs + names.expert.format(e)
            gate, up, down = _expert_pieces(w_in, w_out, e)
            out |= {expert + names.gate: gate, expert + names.up: up, expert + names.down: down}
        if config.moe_shared_expert_intermediate_size:
            assert names.shared is not None and names.shared_gate is not None
            shared = theirs + names.shared
            gate, up, down = _expert_pieces(
                state[ours + "shared_expert.w_in"], state[ours + "shared_expert.w_out"], 0
            )
            out |= {
                shared + "gate_proj.weight": gate,
                shared + "up_proj.weight": up,
                shared + "down_proj.weight": down,
                theirs + names.shared_gate: state[ours + "shared_expert_gate.weight"],
            }
    return out


def _pop(theirs: StateDict, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Their tensor `name`, checked to be `shape` (a config the weights disagree with)."""
    if name not in theirs:
        raise ConversionError(f"the weights have no {name}, which the config's experts need")
    tensor = theirs.pop(name)
    if tuple(tensor.shape) != shape:
        raise ConversionError(
            f"{name} is {tuple(tensor.shape)}, but the config's experts need {shape}"
        )
    return tensor


def _stacked(
    theirs: StateDict, prefixes: list[str], names: tuple[str, str, str], h: int, inner: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """neox's (w_in, w_out) of the experts under `prefixes`, from their (gate, up, down)."""
    w_in, w_out = [], []
    for prefix in prefixes:
        gate = _pop(theirs, prefix + names[0], (inner, h))
        up = _pop(theirs, prefix + names[1], (inner, h))
        down = _pop(theirs, prefix + names[2], (h, inner))
        w_in.append(torch.cat([up, gate], dim=0).t())
        w_out.append(down.t())
    return torch.stack(w_in).contiguous(), torch.stack(w_out).contiguous()


def _from_hf(theirs: StateDict, config: ModelConfig, names: ExpertNames) -> StateDict:
    remaining, out = dict(theirs), {}
    h, inner = config.hidden_size, config.expert_ffn_size
    for i in range(config.num_layers):
        if not config.is_moe_layer(i):
            continue
        ours, prefix = f"layers.{i}.mlp.", llama.KEYS.layer_prefix.format(i)
        experts = [prefix + names.expert.format(e) for e in range(config.moe_num_experts)]
        parts = (names.gate, names.up, names.down)
        router = _pop(remaining, prefix + names.router, (config.moe_num_experts, h))
        out[ours + "router.weight"] = router
        out[ours + "experts.w_in"], out[ours + "experts.w_out"] = _stacked(
            remaining, experts, parts, h, inner
        )
        shared = config.moe_shared_expert_intermediate_size
        if shared:
            assert names.shared is not None and names.shared_gate is not None
            mlp = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")
            w_in, w_out = _stacked(remaining, [prefix + names.shared], mlp, h, shared)
            out[ours + "shared_expert.w_in"], out[ours + "shared_expert.w_out"] = w_in, w_out
            gate = _pop(remaining, prefix + names.shared_gate, (1, h))
            out[ours + "shared_expert_gate.weight"] = gate
    return {**from_format(remaining, config, llama.KEYS), **out}


def moe_problems(config: ModelConfig, family: str, shared: bool, every_layer: bool) -> list[str]:
    """Why `family`'s mixture of experts (a shared expert where `shared`; experts on every layer
    where `every_layer`) cannot reproduce `config`'s; the dense parts are `family_problems`."""
    if not config.moe:
        return [f"moe_num_experts 1 ({family}'s MLPs are mixtures of experts)"]
    problems = []
    if every_layer and config.moe_expert_interval != 1 and config.num_layers > 1:
        problems.append(
            f"moe_expert_interval {config.moe_expert_interval} ({family} has experts on every "
            "layer)"
        )
    if config.moe_router_type != "softmax_topk":
        problems.append(
            f"moe_router_type {config.moe_router_type!r} ({family} takes the top-k of the "
            "router's softmax: softmax_topk)"
        )
    elif family == "Mixtral" and config.moe_normalize_topk is False:
        problems.append("moe_normalize_topk False (Mixtral renormalises the top-k weights)")
    if config.moe_jitter_eps:
        problems.append(f"moe_jitter_eps ({family} has no jitter on the router's input alone)")
    size = config.moe_shared_expert_intermediate_size
    if shared and not size:
        problems.append(f"moe_shared_expert_intermediate_size 0 ({family} has a shared expert)")
    if not shared and size:
        problems.append(f"moe_shared_expert_intermediate_size {size} ({family} has none)")
    if config.use_bias_in_mlp:
        problems.append(f"use_bias_in_mlp True ({family}'s experts have no biases)")
    return problems


# -- Mixtral -------------------------------------------------------------------------------


def mixtral_export_problems(config: ModelConfig) -> list[str]:
    """Why Mixtral cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Mixtral", moe=True)
    problems += bias_problems(config, (NO_BIASES,), "Mixtral has no biases")
    return problems + moe_problems(config, "Mixtral", shared=False, every_layer=True)


def mixtral_hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The MixtralConfig of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import MixtralConfig

    values = common_hf_config(config, eod_id, padded_vocab or config.padded_vocab_size)
    values["intermediate_size"] = config.expert_ffn_size
    return MixtralConfig(
        **values,
        sliding_window=hf_window(config),
        num_local_experts=config.moe_num_experts,
        num_experts_per_tok=config.moe_top_k,
        router_aux_loss_coef=config.moe_loss_coeff,
        router_jitter_noise=0.0,
        architectures=["MixtralForCausalLM"],
        dtype=dtype,
    )


def mixtral_model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a MixtralConfig (vocabulary not set)."""
    window = hf.sliding_window
    problems = window_problems(window)
    if hf.router_jitter_noise:
        problems.append(
            f"router_jitter_noise {hf.router_jitter_noise} (it scales the experts' input too; "
            "neox's moe_jitter_eps scales the router's alone)"
        )
    if hf.num_local_experts < 2:
        problems.append(f"num_local_experts {hf.num_local_experts} (import it as Mistral)")
    return common_model_config(
        hf,
        "Mixtral",
        problems,
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
        sliding_window_width=None if window is None or window < 2 else window - 1,
        moe_num_experts=hf.num_local_experts,
        moe_top_k=hf.num_experts_per_tok,
        moe_router_type="softmax_topk",
        moe_loss_coeff=hf.router_aux_loss_coef,
        moe_ffn_hidden_size=hf.intermediate_size,
    )


def mixtral_to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return _to_hf(state, config, MIXTRAL)


def mixtral_from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return _from_hf(theirs, config, MIXTRAL)


# -- Qwen2-MoE -----------------------------------------------------------------------------


def qwen2_moe_export_problems(config: ModelConfig) -> list[str]:
    """Why Qwen2-MoE cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Qwen2MoE", moe=True)
    problems += bias_problems(
        config, ((True, False, False), NO_BIASES), "Qwen2MoE's qkv_bias is on q, k and v only"
    )
    return problems + moe_problems(config, "Qwen2MoE", shared=True, every_layer=False)


def qwen2_moe_hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The Qwen2MoeConfig of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import Qwen2MoeConfig

    vocab = padded_vocab or config.padded_vocab_size
    dense = [i for i in range(config.num_layers) if not config.is_moe_layer(i)]
    normalise = config.moe_normalize_topk is not False  # None: softmax_topk's own, yes
    return Qwen2MoeConfig(
        **common_hf_config(config, eod_id, vocab, head_dim_key=False),
        **qwen.window_config(config),
        qkv_bias=config.qkv_bias,
        moe_intermediate_size=config.expert_ffn_size,
        shared_expert_intermediate_size=config.moe_shared_expert_intermediate_size,
        num_experts=config.moe_num_experts,
        num_experts_per_tok=config.moe_top_k,
        norm_topk_prob=normalise,
        decoder_sparse_step=1,
        mlp_only_layers=dense,
        router_aux_loss_coef=config.moe_loss_coeff,
        architectures=["Qwen2MoeForCausalLM"],
        dtype=dtype,
    )


def sparse_layers(hf: Any) -> list[int]:
    """The layers a Qwen2MoeConfig gives experts (transformers' rule)."""
    step, dense = hf.decoder_sparse_step, set(hf.mlp_only_layers or [])
    if not hf.num_experts:
        return []
    return [i for i in range(hf.num_hidden_layers) if i not in dense and (i + 1) % step == 0]


def expert_interval(layers: list[int], num_layers: int) -> int | None:
    """neox's `moe_expert_interval` whose MoE layers are `layers`, or None when none is."""
    for interval in range(1, num_layers + 1):
        if layers == list(range(0, num_layers, interval)):
            return interval
    return None


def qwen2_moe_model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a Qwen2MoeConfig (vocabulary not set)."""
    width, problems = qwen.window(hf)
    sparse = sparse_layers(hf)
    interval = expert_interval(sparse, hf.num_hidden_layers)
    if not sparse:
        problems.append("no layer has experts (import it as Qwen2)")
    elif interval is None:
        problems.append(
            f"experts on layers {sparse} (decoder_sparse_step {hf.decoder_sparse_step}, "
            f"mlp_only_layers {list(hf.mlp_only_layers or [])}); neox-model puts them on layers "
            "0, k, 2k, ... (moe_expert_interval k)"
        )
    if not hf.shared_expert_intermediate_size:
        problems.append("shared_expert_intermediate_size 0 (a shared expert of no width)")
    bias = bool(getattr(hf, "qkv_bias", True))
    return common_model_config(
        hf,
        "Qwen2MoE",
        problems,
        use_bias_in_qkv=bias,
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
        sliding_window_width=width,
        moe_num_experts=hf.num_experts,
        moe_top_k=hf.num_experts_per_tok,
        moe_expert_interval=interval or 1,
        moe_router_type="softmax_topk",
        moe_normalize_topk=bool(hf.norm_topk_prob),
        moe_loss_coeff=hf.router_aux_loss_coef,
        moe_ffn_hidden_size=hf.moe_intermediate_size,
        moe_shared_expert_intermediate_size=hf.shared_expert_intermediate_size,
    )


def qwen2_moe_to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return _to_hf(state, config, QWEN2_MOE)


def qwen2_moe_from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return _from_hf(theirs, config, QWEN2_MOE)
