"""`neox train` refuses token files made with another tokenizer before starting any worker."""

import numpy as np

from neox_data import TokenFileWriter, train_bpe_tokenizer

from conftest import neox, run_config, write_yaml


def test_ids_beyond_the_vocabulary_are_one_line_before_any_worker_starts(tmp_path):
    tokenizer = train_bpe_tokenizer(["the cat sat on the mat"] * 20, 300, tmp_path / "tok.json")
    with TokenFileWriter(tmp_path / "other_text_document", np.uint16) as writer:
        for _ in range(50):
            writer.add_document([5, 17, 50300, 3])  # a GPT-2 id
    values = run_config(
        tmp_path,
        tmp_path / "save",
        data_path=str(tmp_path / "other_text_document"),
        vocab_file=str(tmp_path / "tok.json"),
        train_micro_batch_size_per_gpu=2,
    )
    result = neox("train", write_yaml(tmp_path / "run.yml", values))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("neox train: error: data_path ")
    assert (
        f"{tmp_path}/other_text_document.bin holds token id 50300, beyond the tokenizer's "
        f"{tokenizer.vocab_size} ids (vocab_file {tmp_path}/tok.json)"
    ) in line
    assert not (tmp_path / "save").exists()
