import pytest
import torch

from neox_train import ConfigError
from neox_train.engine.schedule import Schedule, ScheduledLR, resumed_schedule


def schedule(style, warmup=10, decay=110, min_lr=0.1):
    return Schedule(lr=1.0, min_lr=min_lr, warmup_iters=warmup, decay_iters=decay, style=style)


def test_linear_warmup_from_the_first_step():
    s = schedule("cosine")
    assert [s.learning_rate(k) for k in (1, 5, 10)] == pytest.approx([0.1, 0.5, 1.0])


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


def resumed(config, saved, **keys):
    rules = dict(override=False, use_checkpoint=False, where="run/global_step40", step=40)
    return resumed_schedule(config, saved, **{**rules, **keys})


def test_on_resume_the_config_the_checkpoint_or_equal_values_as_gpt_neox_decides():
    config, saved = schedule("linear"), schedule("cosine", warmup=5, min_lr=0.2)
    assert resumed(config, saved, override=True) is config
    assert resumed(config, saved, use_checkpoint=True) is saved
    assert resumed(config, schedule("linear")) is config  # equal: nothing to choose
    assert resumed(config, None) is config  # a checkpoint that recorded no schedule
    with pytest.raises(ConfigError) as err:
        resumed(config, saved)
    assert str(err.value) == (
        "run/global_step40 was trained with another learning-rate schedule than this config's: "
        "min_lr 0.2 there, 0.1 here; warmup steps 5 there, 10 here; lr_decay_style cosine "
        "there, linear here; set `override_lr_scheduler: true` to follow this config's schedule "
        "from step 40, or `use_checkpoint_lr_scheduler: true` to keep the checkpoint's"
    )


def test_both_schedule_keys_at_once_are_refused(tmp_path):
    from neox_train import load_run_config

    path = tmp_path / "both.yml"
    path.write_text("override_lr_scheduler: true\nuse_checkpoint_lr_scheduler: true\n")
    with pytest.raises(ConfigError, match="are both true: set one of them"):
        load_run_config([path])


def test_the_scheduler_keeps_its_schedule_and_takes_the_step_count_of_a_checkpoint():
    """Also from the state of torch's LambdaLR, which neox saved before (its base rate is not
    this run's)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5.0)
    earlier = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    for _ in range(3):
        optimizer.step()
        earlier.step()
    scheduler = ScheduledLR(optimizer, schedule("linear"))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # step 1 of 10 warming up
    scheduler.load_state_dict(earlier.state_dict())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4)  # step 4 of the warmup
    scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([0.5])
    assert set(scheduler.state_dict()) == {"last_epoch", "_step_count"}  # no schedule in it
