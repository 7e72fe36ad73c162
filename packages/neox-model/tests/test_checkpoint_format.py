"""The checkpoint format's owner: atomic umask-honouring writes, files.json, completeness,
resolving a path to a step, and reading torch files without running code from them."""

import argparse
import errno
import json
import os
import stat

import pytest
import torch

from neox_model import ModelConfig, ModelManifest, Transformer, WeightFile, load_model
from neox_model.checkpoint import (
    FILES,
    LATEST,
    CorruptCheckpoint,
    DiskFull,
    NoCheckpoint,
    UnsafeCheckpoint,
    complete_steps,
    is_complete,
    load_file,
    resolve_step,
    seal_step,
    verify_step,
    write_atomic,
    write_manifest,
)

CONFIG = ModelConfig(
    num_layers=1, hidden_size=16, num_attention_heads=2, seq_length=8, vocab_size=30
)


def make_step(run_dir, n, *, seal=True):
    step = run_dir / f"global_step{n}"
    step.mkdir(parents=True)
    torch.save({"module": Transformer(CONFIG, seed=n).state_dict()}, step / "w.pt")
    (step / "config.yml").write_text("seq_length: 8\n")
    write_manifest(step, ModelManifest(CONFIG, (WeightFile("w.pt", "module"),)))
    if seal:
        seal_step(step)
    return step


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_follow_the_umask(tmp_path, umask_022):
    path = write_atomic(tmp_path / "a.json", "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, as open() makes it
    os.umask(0o077)
    path = write_atomic(tmp_path / "b.json", b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporaries


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):  # as a network file system reports a full disk: at the flush
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFull, match=f"no space left on device writing {tmp_path / 'x.json'}"):
        write_atomic(tmp_path / "x.json", "x" * 100_000)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("victim", ["w.pt", "model.json", "config.yml"])
def test_a_flipped_byte_in_any_file_is_named(tmp_path, victim):
    make_step(tmp_path, 3)
    step = make_step(tmp_path, 5)
    verify_step(step)
    data = bytearray((step / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (step / victim).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint) as caught:
        verify_step(step)
    message = str(caught.value)
    assert f"{step / victim} is damaged" in message
    assert f"load: {tmp_path / 'global_step3'}" in message and "\n" not in message


def test_a_truncated_or_missing_file_and_a_damaged_record_are_refused(tmp_path):
    step = make_step(tmp_path, 1)
    (step / "w.pt").write_bytes((step / "w.pt").read_bytes()[:-10])
    with pytest.raises(CorruptCheckpoint, match=r"w\.pt is damaged"):
        verify_step(step)
    (step / "w.pt").unlink()
    with pytest.raises(CorruptCheckpoint, match=r"w\.pt is missing"):
        verify_step(step)
    body = json.loads((step / FILES).read_text())
    body["files"]["config.yml"]["size"] += 1  # the record itself edited or damaged
    (step / FILES).write_text(json.dumps(body))
    with pytest.raises(CorruptCheckpoint, match=f"{step / FILES} is damaged"):
        verify_step(step)


def test_a_step_is_complete_once_sealed_and_legacy_steps_still_count(tmp_path):
    sealed = make_step(tmp_path, 2)
    killed = make_step(tmp_path, 4, seal=False)  # a save that stopped before files.json
    legacy = tmp_path / "global_step1"
    legacy.mkdir()
    (legacy / "model.json").write_text(json.dumps({"format_version": 2}))
    assert is_complete(sealed) and is_complete(legacy) and not is_complete(killed)
    assert complete_steps(tmp_path) == [legacy, sealed]


def test_resolving_a_path_says_what_was_looked_for(tmp_path):
    run = tmp_path / "run_1b"
    with pytest.raises(NoCheckpoint, match="does not exist"):
        resolve_step(run)
    step = make_step(run, 10)
    with pytest.raises(NoCheckpoint, match=r"did you mean .*run_1b\?"):
        resolve_step(tmp_path / "run_1B")  # a typo
    with pytest.raises(NoCheckpoint, match="no `latest` file but holds the complete steps"):
        resolve_step(run)
    (run / LATEST).write_text("global_step20\n")
    with pytest.raises(NoCheckpoint, match="names 'global_step20', which is not a complete step"):
        resolve_step(run)
    (run / LATEST).write_text("global_step10\n")
    assert resolve_step(run) == step == resolve_step(step)
    unsealed = make_step(run, 11, seal=False)
    with pytest.raises(NoCheckpoint, match="incomplete step"):
        resolve_step(unsealed)
    with pytest.raises(NoCheckpoint, match="holds no neox checkpoint"):
        resolve_step(tmp_path)


class WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    torch.save({"module": {}, "payload": WritesAFile(str(target))}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"evil.pt refused: unpickling it would call .*open"):
        load_file(tmp_path / "evil.pt")
    assert not target.exists()


def test_a_planted_pickle_in_a_sealed_step_is_refused_by_readers(tmp_path):
    step = make_step(tmp_path, 1)
    target = tmp_path / "pwned"
    torch.save({"module": WritesAFile(str(target))}, step / "w.pt")
    seal_step(step)  # the attacker rewrote files.json too: the checksums pass
    with pytest.raises(UnsafeCheckpoint):
        load_model(step)
    assert not target.exists()


def test_allow_listed_plain_types_load(tmp_path):
    saved = {"args": argparse.Namespace(num_layers=2), "t": torch.ones(2), "size": torch.Size([2])}
    torch.save(saved, tmp_path / "ok.pt")
    loaded = load_file(tmp_path / "ok.pt")
    assert loaded["args"].num_layers == 2 and loaded["size"] == torch.Size([2])


def test_a_damaged_zip_is_a_corrupt_checkpoint(tmp_path):
    torch.save({"t": torch.ones(4)}, tmp_path / "a.pt")
    (tmp_path / "a.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:50])
    with pytest.raises(CorruptCheckpoint, match=r"a\.pt cannot be read"):
        load_file(tmp_path / "a.pt")
