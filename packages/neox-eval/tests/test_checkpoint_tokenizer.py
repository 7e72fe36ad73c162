"""The tokenizer of a step comes from its model.json, through neox-model's checkpoint format; a
step saved before model.json recorded the tokenizer type is read through its config.yml."""

import dataclasses

from neox_data import CharLevelTokenizer, HFTokenizer
from neox_eval import load_checkpoint
from neox_model import read_manifest, write_manifest
from neox_model.checkpoint import FILES, seal_step

from conftest import make_checkpoint


def test_the_manifest_names_the_tokenizer_and_the_run_config_is_not_read(tmp_path):
    make_checkpoint(tmp_path)
    step = tmp_path / "global_step10"
    manifest = read_manifest(step)
    write_manifest(step, dataclasses.replace(manifest, tokenizer_type="HFTokenizer"))
    (step / "config.yml").write_text("tokenizer_type: CharLevelTokenizer\nlr: 3e-4\n")
    (step / FILES).unlink()
    seal_step(step)
    assert isinstance(load_checkpoint(tmp_path).tokenizer, HFTokenizer)


def test_an_older_step_is_read_through_its_run_config(tmp_path):
    make_checkpoint(tmp_path)  # config.yml says HFTokenizer; model.json names only the file
    assert read_manifest(tmp_path / "global_step10").tokenizer_type is None
    assert isinstance(load_checkpoint(tmp_path).tokenizer, HFTokenizer)
    given = {"tokenizer_type": "CharLevelTokenizer"}  # given configs merge over it, as before
    assert isinstance(load_checkpoint(tmp_path, overrides=given).tokenizer, CharLevelTokenizer)
