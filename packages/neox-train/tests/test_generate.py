import pytest
import torch

from neox_model import ModelConfig, Transformer
from neox_train.generation.sampling import Sampling, generate, next_token


def test_greedy_top_k_and_top_p():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0, 2.8])
    assert next_token(logits, Sampling(), None) == 1
    gen = torch.Generator().manual_seed(0)
    assert {next_token(logits, Sampling(1.0, top_p=0.01), gen) for _ in range(20)} == {1}
    assert {next_token(logits, Sampling(1.0, top_k=1), gen) for _ in range(20)} == {1}
    drawn = {next_token(logits, Sampling(1.0, top_k=2), gen) for _ in range(200)}
    assert drawn == {1, 2}  # the two likeliest only
    drawn = {next_token(logits, Sampling(1.0, top_p=0.9), gen) for _ in range(300)}
    assert drawn == {1, 2, 4}  # the nucleus holds the three likely tokens


def model(seq_length=8):
    config = ModelConfig(
        num_layers=1,
        hidden_size=16,
        num_attention_heads=2,
        seq_length=seq_length,
        pos_emb="rotary",
        vocab_size=10,
        make_vocab_size_divisible_by=16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    m = Transformer(config, seed=0)
    with torch.no_grad():
        m.embed_in.weight[10:] = 100.0  # padding rows would win every argmax
    return m


def test_generation_stops_and_never_emits_padding():
    m = model()
    new = generate(m, [1, 2, 3], 20, vocab_size=10)
    assert len(new) == 20 and max(new) < 10  # also: context longer than seq_length is cut
    stop = new[0]
    assert generate(m, [1, 2, 3], 20, vocab_size=10, stop=lambda ids: ids[-1] == stop) == [stop]


def test_recompute_and_the_kv_cache_sample_the_same_tokens():
    m = model()
    for sampling in (Sampling(), Sampling(temperature=0.8, top_k=5, top_p=0.9)):
        runs = [
            generate(
                m,
                [1, 2, 3],
                12,
                vocab_size=10,
                sampling=sampling,
                recompute=recompute,
                generator=torch.Generator().manual_seed(7),
            )
            for recompute in (False, True)
        ]
        assert runs[0] == runs[1]
    streamed = []
    generate(m, [1, 2], 5, vocab_size=10, on_token=streamed.append)
    assert len(streamed) == 5


def test_the_compiled_step_picks_the_eager_tokens_without_recompiling():
    from torch._dynamo.utils import counters

    m = model()
    counters.clear()
    for prompt in ([1, 2, 3], [4, 5]):  # also past seq_length: the cut rebuilds the cache
        eager = generate(m, prompt, 12, vocab_size=10)
        assert generate(m, prompt, 12, vocab_size=10, compile=True) == eager
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_compiled_decoding_sizes_its_cache_and_compiles_once():
    """The static cache holds prompt + new tokens (rounded up to 64 positions), so calls of other
    lengths have other shapes: the graph compiled for the first, its length dynamic, serves all."""
    from torch._dynamo.utils import counters

    m = model(seq_length=256)
    counters.clear()
    for length in (10, 80, 150, 40):  # caches of 64, 128, 192 and 64 positions
        prompt = [i % 9 + 1 for i in range(length)]
        eager = generate(m, prompt, 8, vocab_size=10)
        assert generate(m, prompt, 8, vocab_size=10, compile=True) == eager
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_compiled_decoding_needs_the_cache():
    with pytest.raises(ValueError, match="needs the KV cache"):
        generate(model(), [1, 2], 3, vocab_size=10, compile=True, recompute=True)


@pytest.mark.parametrize(
    "masked",
    [
        dict(num_kv_heads=1, sliding_window_width=3, norm="rmsnorm", activation="swiglu"),
        dict(pos_emb="alibi"),
    ],
    ids=["sliding-window-gqa", "alibi"],
)
def test_compiled_decoding_over_masked_attention_picks_the_eager_tokens(masked):
    """The static cache's masked path: a window that drops old keys, ALiBi's distance bias."""
    config = ModelConfig(
        **{
            **dict(num_layers=2, hidden_size=16, num_attention_heads=2, seq_length=64),
            **dict(pos_emb="rotary", vocab_size=10, hidden_dropout=0.0, attention_dropout=0.0),
            **masked,
        }
    )
    m = Transformer(config, seed=1)
    prompt = [3, 5, 7, 1, 2]
    assert generate(m, prompt, 16, vocab_size=10, compile=True) == generate(
        m, prompt, 16, vocab_size=10
    )
