"""Shared builders: tiny Hugging Face models from configs (random weights, no downloads), neox
checkpoints laid out as neox-train saves them, a tokenizer, and greedy decoding."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import neox_testing
from neox_model import Sampling, next_tokens
from neox_testing import tiny_model

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
    """A step directory laid out as neox-train saves one (DeepSpeed's module file + manifest);
    a model 64 wide over 32 tokens, partial rotary, VOCAB tokens padded to 384 rows."""
    sizes = dict(hidden_size=64, seq_length=32, vocab_size=VOCAB, make_vocab_size_divisible_by=128)
    config = tiny_model(**{"pos_emb": "rotary", "rotary_pct": 0.25, **sizes, **overrides})
    return neox_testing.make_checkpoint(root, config, build_tokenizer)


def greedy(logits_of, prompt=PROMPT, steps=20, vocab=None):
    """Greedy decoding by full recomputation; `logits_of(ids)` -> (1, seq, rows)."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = logits_of(ids)[:, -1, :vocab]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def cached_greedy(model, prompt=PROMPT, steps=20, vocab=None):
    """Greedy decoding as `neox generate` decodes: the prompt, then one token at a time over the
    model's KV cache, each chosen by `neox_model.next_tokens`."""
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + steps)
    ids, new = prompt, prompt
    with torch.no_grad():
        for _ in range(steps):
            new = next_tokens(model(new, cache=cache)[:, -1, :vocab], Sampling(), None)[:, None]
            ids = torch.cat([ids, new], dim=1)
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
