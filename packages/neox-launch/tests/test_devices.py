"""Counting GPUs without torch: CUDA_VISIBLE_DEVICES first, then nvidia-smi -L."""

import pytest

from neox_launch import count_local_gpus


@pytest.mark.parametrize(
    ("visible", "count"),
    [("", 0), ("0", 1), ("0,1,2,3", 4), ("3, 1", 2), ("0,1,-1,2", 2), ("-1", 0)],
)
def test_cuda_visible_devices_wins(visible, count, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert count_local_gpus() == count


def _fake_nvidia_smi(directory, script):
    path = directory / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_nvidia_smi_gpus_are_counted_without_mig_lines(tmp_path, monkeypatch):
    _fake_nvidia_smi(
        tmp_path,
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
        "echo '  MIG 3g.40gb     Device  0: (UUID: MIG-b)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-c)'\n",
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert count_local_gpus() == 2


def test_a_failing_nvidia_smi_means_no_gpus(tmp_path, monkeypatch, caplog):
    _fake_nvidia_smi(tmp_path, "echo 'driver not loaded' >&2\nexit 9\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert count_local_gpus() == 0
    assert "driver not loaded" in caplog.text


def test_no_nvidia_smi_means_no_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert count_local_gpus() == 0
