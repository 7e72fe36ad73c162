import pytest

from neox_train.engine.schedule import Schedule


def schedule(style, warmup=10, decay=110, min_lr=0.1):
    return Schedule(lr=1.0, min_lr=min_lr, warmup_iters=warmup, decay_iters=decay, style=style)


def test_linear_warmup_from_the_first_step():
    s = schedule("cosine")
    assert [s.learning_rate(k) for k in (1, 5, 10)] == pytest.approx([0.1, 0.5, 1.0])
    assert s.factor(0) == pytest.approx(0.1)  # LambdaLR's counter starts at 0


def test_cosine_reaches_min_lr_at_the_end_and_stays():
    s = schedule("cosine")
    assert s.learning_rate(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.learning_rate(110) == pytest.approx(0.1)
    assert s.learning_rate(500) == pytest.approx(0.1)


def test_linear_decays_towards_zero_clamped_at_min_lr():
    s = schedule("linear")
    assert s.learning_rate(60) == pytest.approx(0.5)
    assert s.learning_rate(100) == pytest.approx(0.1)  # 0.1 from the line, floor 0.1


def test_constant_and_no_warmup():
    s = schedule("constant", warmup=0)
    assert {s.learning_rate(k) for k in (1, 50, 200)} == {1.0}


def test_inverse_sqrt_after_warmup():
    s = schedule("inverse_sqrt", warmup=4, min_lr=0.0)
    assert [s.learning_rate(k) for k in (2, 4, 16, 64)] == pytest.approx([0.5, 1.0, 0.5, 0.25])


def test_warmup_in_steps_or_as_a_fraction(tmp_path):
    from neox_train import load_run_config

    base = (
        "num_layers: 1\nhidden_size: 8\nnum_attention_heads: 2\nseq_length: 4\n"
        "optimizer: {type: adam, params: {lr: 0.1}}\ntrain_iters: 200\n"
    )
    for warmup, steps in (("0.05", 10), ("30", 30), ("1.0", 200)):
        path = tmp_path / f"w{warmup}.yml"
        path.write_text(base + f"warmup: {warmup}\n")
        assert load_run_config([path]).run.warmup_iters == steps
