"""Token files made with another tokenizer are refused when the run starts, in one line naming
the file, its largest id and the tokenizer's vocabulary size, before anything trains."""

import numpy as np
import pytest

from neox_data import TokenFile, TokenFileWriter
from neox_train import ConfigError, check_inputs, load_run_config

from conftest import start_workers, tiny_config, write_config


def token_file(prefix, documents, dtype=np.uint16):
    with TokenFileWriter(prefix, dtype) as writer:
        for document in documents:
            writer.add_document(document)
    return prefix


def config(data_dir, tmp_path, **overrides):
    return tiny_config(data_dir, tmp_path / "run", train_micro_batch_size_per_gpu=2, **overrides)


def run_of(tmp_path, data_dir, **overrides):
    values = config(data_dir, tmp_path, **overrides)
    return load_run_config([write_config(tmp_path / "run.yml", values)]).run


def test_neox_train_refuses_ids_beyond_the_vocabulary_in_one_line(data_dir, tmp_path):
    """The 400-token tokenizer of the test data, and a file holding id 50300 (from GPT-2's)."""
    prefix = token_file(tmp_path / "gpt2_text_document", [[5, 17, 50300, 3]] * 40)
    path = write_config(tmp_path / "run.yml", config(data_dir, tmp_path, data_path=str(prefix)))
    [worker] = start_workers([path], world_size=1)
    output = worker.communicate(timeout=300)[0]
    assert worker.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("neox-train:")]
    assert errors == [
        f"neox-train: error: data_path {str(prefix)!r}: {prefix}.bin holds token id 50300, "
        f"beyond the tokenizer's 400 ids (vocab_file {data_dir / 'tokenizer.json'}): the data "
        "was made with another tokenizer; tokenize it again with this one (neox data "
        "preprocess) or set vocab_file to the one it was made with"
    ], output[-3000:]
    assert "Traceback" not in output and "IndexError" not in output
    assert not (tmp_path / "run").exists()


def test_the_largest_id_that_fits_is_accepted(data_dir, tmp_path):
    prefix = token_file(tmp_path / "edge", [[0, 399, 7]] * 10)
    check_inputs(run_of(tmp_path, data_dir, data_path=str(prefix)))
    assert TokenFile(prefix).max_id() == 399


@pytest.mark.parametrize(
    ("kind", "documents", "message"),
    [
        ("train_data_paths", [[1, 400]], "holds token id 400, beyond the tokenizer's 400 ids"),
        ("train_data_paths", [[1, -3]], "holds token id -3: token ids cannot be negative"),
        ("train_label_data_paths", [[-100, 401]], "holds label 401, beyond the tokenizer's 400"),
    ],
)
def test_files_per_purpose_and_label_files_are_checked(
    data_dir, tmp_path, kind, documents, message
):
    good = token_file(tmp_path / "good", [[1, 2]])
    bad = token_file(tmp_path / "bad", documents, np.int32)
    paths = {
        "train_data_paths": [str(bad if kind == "train_data_paths" else good)],
        "train_label_data_paths": [str(bad if kind == "train_label_data_paths" else good)],
    }
    run = run_of(tmp_path, data_dir, data_path=None, **paths)
    with pytest.raises(ConfigError, match=rf"^{kind} '{bad}': {bad}\.bin {message}"):
        check_inputs(run)


def test_a_label_file_may_hold_the_no_loss_label(data_dir, tmp_path):
    tokens = token_file(tmp_path / "tokens", [[1, 2, 3]])
    labels = token_file(tmp_path / "labels", [[-100, 2, 3]], np.int32)
    run = run_of(
        tmp_path,
        data_dir,
        data_path=None,
        train_data_paths=[str(tokens)],
        train_label_data_paths=[str(labels)],
    )
    check_inputs(run)
