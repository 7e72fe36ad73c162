"""--overwrite replaces a previous output of the same conversion, and only that: a directory
holding files the conversion does not write (a user's notes, training checkpoints, an older
export's other shards) is refused, naming them, and left as it was. Outputs get the permissions
the umask asks for."""

import os
import stat

import pytest

from neox_convert.cli import main
from neox_testing import hf_model

from conftest import make_checkpoint, save_hf


def to_hf(tmp_path, *extra):
    args = ["to-hf", "--input_dir", str(tmp_path / "run"), "--output_dir", str(tmp_path / "hf")]
    return main([*args, *extra])


def snapshot(directory):
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


def test_overwrite_replaces_a_previous_export(tmp_path):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    assert to_hf(tmp_path) == 0
    first = snapshot(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"stale")
    assert to_hf(tmp_path, "--overwrite") == 0
    assert snapshot(tmp_path / "hf") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # nothing left beside


def test_overwrite_refuses_files_the_conversion_does_not_write_and_keeps_them(tmp_path, capsys):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    assert to_hf(tmp_path) == 0
    (tmp_path / "hf" / "NOTES.md").write_text("my notes")
    (tmp_path / "hf" / "old").mkdir()
    (tmp_path / "hf" / "old" / "model-00001-of-00002.safetensors").write_bytes(b"older export")
    before = snapshot(tmp_path / "hf")
    capsys.readouterr()

    assert to_hf(tmp_path, "--overwrite") == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{tmp_path / 'hf'} holds NOTES.md, old/model-00001-of-00002.safetensors, " in err
    assert "which this conversion does not write" in err
    assert snapshot(tmp_path / "hf") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]


def test_an_import_over_a_training_run_keeps_its_checkpoints(tmp_path, capsys):
    source = save_hf(hf_model("neox"), tmp_path / "hf")
    run = tmp_path / "run"
    args = ["from-hf", "--input_dir", str(source), "--output_dir", str(run)]
    assert main(args) == 0
    (run / "global_step500").mkdir()
    (run / "global_step500" / "mp_rank_00_model_states.pt").write_bytes(b"500 steps of training")
    assert main([*args, "--overwrite"]) == 2
    assert "holds global_step500/mp_rank_00_model_states.pt, " in capsys.readouterr().err
    assert (run / "global_step500" / "mp_rank_00_model_states.pt").is_file()


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_exports_follow_the_umask(tmp_path, mask):
    make_checkpoint(tmp_path / "run", no_weight_tying=True)
    previous = os.umask(mask)
    try:
        assert to_hf(tmp_path) == 0
    finally:
        os.umask(previous)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in (tmp_path / "hf").iterdir()}
    assert oct(stat.S_IMODE((tmp_path / "hf").stat().st_mode)) == oct(0o777 & ~mask)
    assert modes == dict.fromkeys(modes, oct(0o666 & ~mask))
