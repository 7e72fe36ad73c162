import dataclasses

import pytest
import torch

from neox_model import (
    ModelManifest,
    Transformer,
    WeightFile,
    load_model,
    read_manifest,
    resolve_step,
    write_manifest,
)
from neox_model.checkpoint import NoCheckpoint, seal_step
from neox_testing import tiny_model

CONFIG = tiny_model(num_layers=1, pos_emb="rotary", vocab_size=30)


def save_step(run_dir, name="global_step7"):
    step = run_dir / name
    step.mkdir(parents=True)
    model = Transformer(CONFIG, seed=11)
    torch.save({"module": model.state_dict(), "other": "deepspeed things"}, step / "weights.pt")
    write_manifest(step, ModelManifest(CONFIG, (WeightFile("weights.pt", "module"),)))
    seal_step(step)
    return step, model


def test_manifest_round_trip(tmp_path):
    step, _ = save_step(tmp_path)
    manifest = read_manifest(step)
    assert manifest.config == CONFIG
    assert manifest.files == (WeightFile("weights.pt", "module"),)


def test_run_directory_resolves_through_latest(tmp_path):
    step, model = save_step(tmp_path)
    with pytest.raises(NoCheckpoint, match="no `latest` file but holds the complete steps"):
        resolve_step(tmp_path)
    (tmp_path / "latest").write_text("global_step7\n")
    assert resolve_step(tmp_path) == step
    _, _, loaded = load_model(tmp_path)
    ids = torch.tensor([[1, 2, 3]])
    assert not loaded.training
    torch.testing.assert_close(loaded(ids), model.eval()(ids))


def test_latest_pointing_at_an_incomplete_step_is_an_error(tmp_path):
    (tmp_path / "global_step9").mkdir()
    (tmp_path / "latest").write_text("global_step9")
    with pytest.raises(NoCheckpoint, match="not a complete step"):
        resolve_step(tmp_path)


def test_saved_rotary_frequencies_may_be_absent_but_nothing_else(tmp_path):
    config = dataclasses.replace(CONFIG, rotary_save_freqs_buffer=True)
    step = tmp_path / "global_step1"
    step.mkdir()
    state = Transformer(config, seed=1).state_dict()
    del state["rotary.inv_freq"]  # pipeline layer files do not hold it
    torch.save(state, step / "w.pt")
    write_manifest(step, ModelManifest(config, (WeightFile("w.pt"),)))
    seal_step(step)
    _, _, model = load_model(step)
    torch.testing.assert_close(model.rotary.inv_freq, Transformer(config).rotary.inv_freq)
    del state["final_layer_norm.weight"]
    torch.save(state, step / "w.pt")
    seal_step(step)
    with pytest.raises(ValueError, match=r"missing \['final_layer_norm.weight'\]"):
        load_model(step)
