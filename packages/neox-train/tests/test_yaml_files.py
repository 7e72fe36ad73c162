import pytest

from neox_train import ConfigError
from neox_train.config.yaml_files import load_yaml, merge_files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_exponent_numbers_are_floats(tmp_path):
    doc = load_yaml(write(tmp_path, "a.yml", "lr: 3e-4\nmin: 1E+2\nplain: 6.0e-5\nword: e5\n"))
    assert doc == {"lr": 3e-4, "min": 100.0, "plain": 6e-5, "word": "e5"}


def test_dashes_and_underscores_are_one_key(tmp_path):
    doc = load_yaml(write(tmp_path, "a.yml", "num-layers: 2\nzero_optimization: {stage-x: 1}\n"))
    assert doc == {"num_layers": 2, "zero_optimization": {"stage_x": 1}}


DUPLICATES = [
    ("lr: 1\nx: 2\n\nlr: 3\n", "key 'lr' appears twice (lines 1 and 4)"),
    (
        "num-layers: 2\nnum_layers: 3\n",
        "key 'num_layers' appears twice (lines 1 and 2: num-layers and num_layers are one key)",
    ),
    (
        "optimizer:\n  type: Adam\n  params:\n    lr: 1.0e-3\n    eps: 1.0e-8\n    lr: 2.0e-4\n",
        "key 'optimizer.params.lr' appears twice (lines 4 and 6)",
    ),
    ("a: {b: 1, b: 2}\n", "key 'a.b' appears twice (lines 1 and 1)"),
    ("runs:\n  - {seed: 1, seed: 2}\n", "key 'runs[0].seed' appears twice (lines 2 and 2)"),
]


@pytest.mark.parametrize(("text", "message"), DUPLICATES)
def test_a_key_repeated_in_one_file_is_refused_naming_both_lines(tmp_path, text, message):
    path = write(tmp_path, "a.yml", text)
    with pytest.raises(ConfigError) as excinfo:
        load_yaml(path)
    assert str(excinfo.value) == f"{path}: {message}"


def test_a_key_repeated_across_files_is_an_override(tmp_path):
    a, b = write(tmp_path, "a.yml", "lr: 1\n"), write(tmp_path, "b.yml", "lr: 2\n")
    assert merge_files([a, b]).values == {"lr": 2}


def test_yaml_merge_keys_are_not_repeats(tmp_path):
    text = "base: &base {lr: 1, eps: 2}\nrun:\n  <<: *base\n  lr: 3\n"
    assert load_yaml(write(tmp_path, "a.yml", text))["run"] == {"lr": 3, "eps": 2}


def test_later_files_win_nested_mappings_merge_and_overrides_are_recorded(tmp_path):
    a = write(tmp_path, "a.yml", "x: 1\nopt: {type: Adam, params: {lr: 1.0e-3, eps: 1.0e-8}}\n")
    b = write(tmp_path, "b.yml", "opt: {params: {lr: 2.0e-4}}\nx: 1\ny: 5\n")
    merged = merge_files([a, b])
    assert merged.values == {
        "x": 1,
        "opt": {"type": "Adam", "params": {"lr": 2e-4, "eps": 1e-8}},
        "y": 5,
    }
    assert [str(o) for o in merged.overrides] == [f"opt.params.lr: 0.001 -> 0.0002 ({b})"]
    assert merged.origins["y"] == str(b)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2\n", "not valid YAML"),
        ("a: \x07\n", "not valid YAML"),
        ("- 1\n- 2\n", "a config file must be a mapping"),
    ],
)
def test_bad_files_name_the_file(tmp_path, text, message):
    path = write(tmp_path, "bad.yml", text)
    with pytest.raises(ConfigError, match=f"{path}: {message}"):
        load_yaml(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        merge_files([tmp_path / "nope.yml"])
