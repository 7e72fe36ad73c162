"""Tiny random Hugging Face `transformers` models built from a config (no downloads), for the
import, export and end-to-end tests. transformers is imported when a model is built."""

from __future__ import annotations

from typing import Any

from neox_testing.checkpoints import perturb

# kind -> (transformers' config and model class names, the kind's own config values)
HF_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # Pythia-style: partial rotary, parallel residual, untied
    "neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            intermediate_size=256,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
            },
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
    ),
    # GQA, SwiGLU, RMSNorm, an MLP width sized by mlp_multiple_of (96 = 3 x 32)
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(intermediate_size=96, num_key_value_heads=2, rms_norm_eps=1e-5),
    ),
    # GQA + sliding window (a query sees itself and 7 keys before it)
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(intermediate_size=96, num_key_value_heads=2, sliding_window=8),
    ),
}
# what every kind shares: 2 layers 64 wide, 4 heads, 64 positions, weights of std 0.1
HF_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "initializer_range": 0.1,
}


def hf_model(kind: str, vocab_rows: int = 384, **overrides: Any) -> Any:
    """A tiny random transformers model of `kind` (a key of `HF_KINDS`) with `vocab_rows`
    embedding rows, its norms perturbed (`perturb`), in eval mode; the same weights each call."""
    import torch
    import transformers

    config_name, model_name, values = HF_KINDS[kind]
    config = getattr(transformers, config_name)(
        **{"vocab_size": vocab_rows, **HF_TINY, **values, **overrides}
    )
    torch.manual_seed(0)
    return perturb(getattr(transformers, model_name)(config)).eval()
