"""Shared builders: tiny Hugging Face models from configs (random weights, no downloads), neox
checkpoints laid out as neox-train saves them, a tokenizer, and greedy decoding."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from neox_model import ModelConfig, ModelManifest, Transformer, WeightFile, write_manifest
from neox_model.checkpoint import seal_step

TEXT = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int\n    y: int\n"] * 20
VOCAB = 300  # the tokenizer's tokens; models are padded beyond it
PROMPT = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 61, 128, 14]])


def build_tokenizer(path, vocab_size=VOCAB):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT, trainer)
    tok.save(str(path))
    return tok


def perturb(model, seed=0):
    """Norm weights and biases away from 1 and 0, so that a mix-up would show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


HF_KINDS = {
    # Pythia-style: partial rotary, parallel residual, untied
    "neox": (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
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
        LlamaConfig,
        LlamaForCausalLM,
        dict(intermediate_size=96, num_key_value_heads=2, rms_norm_eps=1e-5),
    ),
    # GQA + sliding window (a query sees itself and 7 keys before it)
    "mistral": (
        MistralConfig,
        MistralForCausalLM,
        dict(intermediate_size=96, num_key_value_heads=2, sliding_window=8),
    ),
}


def hf_model(kind, vocab_rows=384, **overrides):
    """A tiny random transformers model of `kind` (neox, llama, mistral), in eval mode."""
    config_class, model_class, values = HF_KINDS[kind]
    values = dict(
        vocab_size=vocab_rows,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.1,
        **values,
    )
    values.update(overrides)
    torch.manual_seed(0)
    return perturb(model_class(config_class(**values))).eval()


def save_hf(model, directory, tokenizer=True, **kwargs):
    model.save_pretrained(directory, **kwargs)
    if tokenizer:
        build_tokenizer(directory / "tokenizer.json")
    return directory


# a Llama-style neox config: GQA, SwiGLU, RMSNorm, no biases, an MLP 96 wide
LLAMA_STYLE = dict(
    norm="rmsnorm",
    rms_norm_epsilon=1e-5,
    use_bias_in_norms=False,
    activation="swiglu",
    num_kv_heads=2,
    rotary_pct=1.0,
    use_bias_in_attn_linear=False,
    use_bias_in_mlp=False,
    intermediate_size=256,
    mlp_multiple_of=32,  # ffn_size 96
    no_weight_tying=True,
)


def make_checkpoint(root, **overrides):
    """A step directory laid out as neox-train saves one (DeepSpeed's module file + manifest)."""
    values = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        seq_length=32,
        pos_emb="rotary",
        rotary_pct=0.25,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vocab_size=VOCAB,
        make_vocab_size_divisible_by=128,
    )
    values.update(overrides)
    config = ModelConfig(**values)
    step = root / "global_step10"
    step.mkdir(parents=True)
    model = perturb(Transformer(config, seed=3))
    torch.save({"module": model.state_dict(), "ds_config": {}}, step / "mp_rank_00_model_states.pt")
    build_tokenizer(step / "tokenizer.json")
    write_manifest(
        step,
        ModelManifest(
            config,
            (WeightFile("mp_rank_00_model_states.pt", "module"),),
            tokenizer="tokenizer.json",
        ),
    )
    seal_step(step)  # files.json, as a save writes last
    (root / "latest").write_text("global_step10\n")
    return model.eval()


def greedy(logits_of, prompt=PROMPT, steps=20, vocab=None):
    """Greedy decoding by full recomputation; `logits_of(ids)` -> (1, seq, rows)."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = logits_of(ids)[:, -1, :vocab]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def hf_greedy(model, prompt=PROMPT, steps=20):
    """transformers' own greedy generation (its KV cache, masks and sliding window)."""
    with torch.no_grad():
        return model.generate(
            prompt,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )


def random_ids(rows=VOCAB, shape=(2, 32), seed=0):
    return torch.randint(0, rows, shape, generator=torch.Generator().manual_seed(seed))
