"""`reshard`: the same model in another tensor/pipeline layout, and back to the same tensors."""

import pytest
import torch
import yaml

from neox_convert.cli import main
from neox_model import (
    EngineLayout,
    RankFiles,
    SavedLayout,
    load_model,
    load_state_dict,
    read_layout,
    read_manifest,
    write_layout,
)

from conftest import LLAMA_STYLE, make_checkpoint, random_ids


def reshard(source, out, tp, pp, *extra):
    args = ["reshard", "--input_dir", str(source), "--output_dir", str(out)]
    return main([*args, "--model_parallel_size", str(tp), "--pipe_parallel_size", str(pp), *extra])


STYLES = {
    "pythia": dict(gpt_j_residual=True, no_weight_tying=True),
    "llama": LLAMA_STYLE,
    "tied": dict(LLAMA_STYLE, no_weight_tying=False),  # no layer file for the tied output
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_reshard_there_and_back(tmp_path, style):
    overrides = STYLES[style]
    model = make_checkpoint(tmp_path / "run", **overrides)
    assert reshard(tmp_path / "run", tmp_path / "tp2pp2", 2, 2) == 0
    step_dir, manifest, resharded = load_model(tmp_path / "tp2pp2")
    assert step_dir.name == "global_step10" and manifest.tensor_parallel == 2
    assert manifest.padded_vocab == 512  # 300 tokens padded to a multiple of 128 x 2
    layer_files = {f.file.split("-")[0] for f in manifest.files if f.file.startswith("layer_")}
    assert len(layer_files) == (4 if style == "tied" else 5)  # 2 blocks
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(resharded(ids)[..., :384], model(ids))
    assert reshard(tmp_path / "tp2pp2", tmp_path / "back", 1, 1) == 0
    _, _, original = load_state_dict(tmp_path / "run")
    _, back_manifest, back = load_state_dict(tmp_path / "back")
    assert back_manifest.tensor_parallel == 1 and sorted(back) == sorted(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_the_config_follows_the_new_layout(tmp_path):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    step = tmp_path / "run" / "global_step10"
    trained = {"num_layers": 2, "vocab_file": "/data/tokenizer.json", "model_parallel_size": 1}
    (step / "config.yml").write_text(yaml.safe_dump({**trained, "save": str(tmp_path / "run")}))
    assert reshard(tmp_path / "run", tmp_path / "out", 2, 1) == 0
    new_step = (tmp_path / "out" / "global_step10").resolve()
    text = (new_step / "config.yml").read_text()
    assert "model weights only" in text  # the source has no optimizer state
    values = yaml.safe_load(text)
    assert values["vocab_file"] == str(new_step / "tokenizer.json")
    assert (new_step / "tokenizer.json").is_file()
    assert (values["model_parallel_size"], values["pipe_parallel_size"]) == (2, 1)
    assert values["load"] == values["save"] == str(new_step.parent) and values["finetune"] is True
    assert read_manifest(new_step).tokenizer == "tokenizer.json"


def test_the_help_says_what_happens_to_the_optimizer_state(capsys):
    with pytest.raises(SystemExit):
        main(["reshard", "--help"])
    assert "keeps its optimizer state" in " ".join(capsys.readouterr().out.split())


def test_optimizer_state_is_carried_as_saved(tmp_path):
    """A step with layout.json: the files it names are copied under optimizer/, the new
    layout.json names them there and is marked resharded, and the config resumes."""
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    step = tmp_path / "run" / "global_step10"
    (step / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"flat partitions")
    (step / "neox_state.json").write_text('{"iteration": 10, "consumed_samples": 80}\n')
    names = {"embed_in.weight": "embed_in.weight"}
    rank = RankFiles(
        0, 0, 0, "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", names
    )
    write_layout(step, SavedLayout(EngineLayout(1, 1, 1, 1, "fp32"), "flat", (rank,)))
    assert reshard(tmp_path / "run", tmp_path / "out", 2, 1) == 0
    new_step = tmp_path / "out" / "global_step10"
    carried = read_layout(new_step)
    assert carried is not None and carried.resharded and carried.layout.tensor == 1
    assert carried.ranks[0].optim_file == "optimizer/zero_pp_rank_0_mp_rank_00_optim_states.pt"
    for name in (rank.model_file, rank.optim_file):
        assert (new_step / "optimizer" / name).read_bytes() == (step / name).read_bytes()
    assert (new_step / "neox_state.json").read_text() == (step / "neox_state.json").read_text()
    values = yaml.safe_load((new_step / "config.yml").read_text())
    assert values["finetune"] is False and values["model_parallel_size"] == 2
    # ZeRO-3 state is not readable at another layout: the weights alone, to fine-tune
    write_layout(step, SavedLayout(EngineLayout(1, 1, 1, 3, "fp32"), "flat", (rank,)))
    assert reshard(tmp_path / "run", tmp_path / "out3", 2, 1) == 0
    assert not (tmp_path / "out3" / "global_step10" / "optimizer").exists()
    assert read_layout(tmp_path / "out3" / "global_step10") is None
    assert yaml.safe_load((tmp_path / "out3" / "global_step10" / "config.yml").read_text())[
        "finetune"
    ]


def test_a_layout_the_model_cannot_take_leaves_nothing(tmp_path, capsys):
    make_checkpoint(tmp_path / "run", no_weight_tying=False)
    assert reshard(tmp_path / "run", tmp_path / "out", 1, 9) == 2
    assert "9 pipeline stages for" in capsys.readouterr().err
    assert reshard(tmp_path / "run", tmp_path / "out", 3, 1) == 2
    assert "cannot split this model over 3 tensor-parallel ranks" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
