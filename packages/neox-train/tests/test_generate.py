import torch

from neox_model import ModelConfig, Transformer
from neox_train.generate import generate, next_token


def test_greedy_is_argmax_and_low_top_p_is_greedy():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert next_token(logits, 0.0, 1.0, None) == 1
    gen = torch.Generator().manual_seed(0)
    assert {next_token(logits, 1.0, 0.01, gen) for _ in range(20)} == {1}
    drawn = {next_token(logits, 1.0, 0.9, gen) for _ in range(200)}
    assert drawn == {1, 2}  # the nucleus holds the two likely tokens only


def test_generation_stops_at_the_stop_token_and_never_emits_padding():
    config = ModelConfig(
        num_layers=1,
        hidden_size=16,
        num_attention_heads=2,
        seq_length=8,
        pos_emb="rotary",
        vocab_size=10,
        make_vocab_size_divisible_by=16,
    )
    model = Transformer(config, seed=0)
    with torch.no_grad():
        model.embed_in.weight[10:] = 100.0  # padding rows would win every argmax
    new = generate(model, [1, 2, 3], 20, vocab_size=10)
    assert len(new) == 20 and max(new) < 10  # also: context longer than seq_length is cut
    stop = new[0]
    assert generate(model, [1, 2, 3], 20, vocab_size=10, stop_id=stop) == [stop]
