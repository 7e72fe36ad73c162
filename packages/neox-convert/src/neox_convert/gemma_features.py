"""The features of Gemma 2 (Gemma Team, 2024, "Gemma 2: Improving Open Language Models at a
Practical Size") that no other exported family has, and why each other family refuses them.

Gemma 2's RMSNorm scales by 1 + weight in float32 before rounding (`rmsnorm_unit_offset`; a
weight of w + 1 in another family's norm rounds differently and does not give the file back),
its attention scores are scaled by 1 / sqrt(`query_pre_attn_scalar`) and soft-capped
(`attention_logit_softcapping`), its logits soft-capped (`final_logit_softcapping`), its
embeddings multiplied by sqrt(hidden_size) (`scale_embeddings`), and every other layer attends
to the whole sequence between windowed ones (`global_attention_every`). Its norms on both
sides of attention and MLP (`norm_placement` sandwich) are each family's placement check.
"""

from __future__ import annotations

from neox_model import ModelConfig


def gemma_problems(config: ModelConfig, family: str) -> list[str]:
    """Why `family`, which has none of Gemma 2's features, cannot reproduce `config`'s."""
    problems = []
    if config.rmsnorm_unit_offset:
        problems.append(
            f"rmsnorm_unit_offset ({family}'s RMSNorm scales by its weight, not 1 + it)"
        )
    scalar = config.query_pre_attn_scalar
    if scalar is not None and scalar != config.head_dim:
        problems.append(
            f"query_pre_attn_scalar {scalar} ({family} scales attention scores by 1 / sqrt of "
            f"the head width, {config.head_dim})"
        )
    if config.attention_logit_softcapping is not None:
        problems.append(f"attention_logit_softcapping ({family} does not cap attention scores)")
    if config.final_logit_softcapping is not None:
        problems.append(f"final_logit_softcapping ({family} does not cap its logits)")
    if config.scale_embeddings:
        problems.append(f"scale_embeddings ({family} does not scale its embeddings)")
    if config.global_attention_every is not None:
        problems.append(
            f"global_attention_every {config.global_attention_every} ({family} windows every "
            "layer or none)"
        )
    return problems
