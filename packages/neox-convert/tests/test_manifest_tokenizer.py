"""A converted step records its tokenizer in model.json (type and files), as neox-train's steps
do: neox-eval builds the tokenizer from the manifest without reading the run config."""

import yaml

from neox_convert.cli import main
from neox_model import read_manifest
from neox_testing import hf_model

from conftest import make_checkpoint, save_hf


def test_an_import_and_its_reshard_record_the_tokenizer(tmp_path):
    source = save_hf(hf_model("llama"), tmp_path / "hf")
    args = ["--input_dir", str(source), "--output_dir", str(tmp_path / "run")]
    assert main(["from-hf", *args]) == 0
    imported = read_manifest(tmp_path / "run" / "global_step0")
    assert (imported.tokenizer_type, imported.tokenizer) == ("HFTokenizer", "tokenizer.json")
    args = ["--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "tp2")]
    assert main(["reshard", *args, "--model_parallel_size", "2", "--pipe_parallel_size", "1"]) == 0
    resharded = read_manifest(tmp_path / "tp2" / "global_step0")
    assert (resharded.tokenizer_type, resharded.tokenizer) == ("HFTokenizer", "tokenizer.json")


def test_a_reshard_records_an_older_steps_tokenizer_from_its_config(tmp_path):
    make_checkpoint(tmp_path / "run")  # model.json names the vocabulary file only
    step = tmp_path / "run" / "global_step10"
    assert read_manifest(step).tokenizer_type is None
    (step / "config.yml").write_text(yaml.safe_dump({"tokenizer_type": "HFTokenizer"}))
    args = ["--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "out")]
    assert main(["reshard", *args, "--model_parallel_size", "1", "--pipe_parallel_size", "1"]) == 0
    resharded = read_manifest(tmp_path / "out" / "global_step10")
    assert (resharded.tokenizer_type, resharded.tokenizer) == ("HFTokenizer", "tokenizer.json")
