import pytest

from neox_train import ConfigError, data_parallel_size, resolve_batch


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((None, 4, None), (32, 4, 1)),
        ((None, 4, 2), (64, 4, 2)),
        ((64, 4, None), (64, 4, 2)),
        ((64, None, 2), (64, 4, 2)),
        ((64, None, None), (64, 8, 1)),
        ((64, 4, 2), (64, 4, 2)),
    ],
)
def test_any_two_give_the_third(given, expected):
    layout = resolve_batch(8, *given)
    assert (layout.global_batch, layout.micro_batch, layout.grad_accum) == expected
    assert layout.data_parallel == 8


def test_inconsistent_values_name_all_three():
    with pytest.raises(
        ConfigError, match=r"train_batch_size \(60\) != .*\(4\) x .*\(2\) x .*\(8\)"
    ):
        resolve_batch(8, 60, 4, 2)


def test_not_divisible_global_batch():
    with pytest.raises(ConfigError, match="not divisible by 24"):
        resolve_batch(8, 100, None, 3)


def test_no_batch_keys():
    with pytest.raises(ConfigError, match="set train_micro_batch_size_per_gpu"):
        resolve_batch(1, None, None, 4)


def test_data_parallel_size():
    assert data_parallel_size(16, 2, 4) == 2
    assert data_parallel_size(4, 0, 1) == 4  # pipe 0 and 1 both mean no pipeline
    with pytest.raises(
        ConfigError, match=r"world size 6 is not divisible by .*\(1\) x .*\(4\) = 4"
    ):
        data_parallel_size(6, 1, 4)
