"""neox-train and neox-eval read the same YAML config files (through neox-model's one reader,
`neox_model.config_files`): both refuse a key repeated in one file, in the same words."""

import pytest

from neox_eval import read_config
from neox_train import ConfigError
from neox_train.config.yaml_files import load_yaml

REPEATS = [
    "lr: 1\nx: 2\nlr: 3\n",
    "train-iters: 5\ntrain_iters: 6\n",
    "optimizer:\n  params:\n    lr: 1.0e-3\n    eps: 1.0e-8\n    lr: 2.0e-4\n",
    "runs:\n  - {seed: 1}\n  - {seed: 2, seed: 3}\n",
]


@pytest.mark.parametrize("text", REPEATS)
def test_both_readers_refuse_a_repeated_key_with_the_same_message(tmp_path, text):
    path = tmp_path / "a.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as train:
        load_yaml(path)
    with pytest.raises(ValueError) as evaluate:
        read_config([path])
    assert str(evaluate.value) == str(train.value)
    assert "appears twice (lines" in str(train.value)


def test_both_readers_accept_merge_keys_and_repeats_across_files(tmp_path):
    base = tmp_path / "base.yml"
    base.write_text("defaults: &d {lr: 1, eps: 2}\nrun:\n  <<: *d\n  lr: 3\n")
    later = tmp_path / "later.yml"
    later.write_text("run: {lr: 4}\n")
    assert load_yaml(base)["run"] == {"lr": 3, "eps": 2}
    assert read_config([base, later])["run"] == {"lr": 4, "eps": 2}
