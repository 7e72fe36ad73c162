"""Checkpoints on an S3-compatible store: moto's server on loopback, spoken to over HTTP."""

import pytest

from neox_testing import free_port
from neox_train.checkpoint.s3 import S3Location, S3Uploader, client, download_latest
from neox_train.config.schema import ConfigError


@pytest.fixture
def store(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client().create_bucket(Bucket="ckpts")
    yield
    server.stop()


def make_step(root, name, sizes):
    step = root / name
    step.mkdir(parents=True)
    for index, size in enumerate(sizes):
        (step / f"file{index}.bin").write_bytes(bytes(range(256)) * (size // 256))
    return step


def test_upload_then_download_the_newest_complete_step(store, tmp_path):
    uploader = S3Uploader("s3://ckpts/runs/a", chunk_size=5 * 2**20)
    uploader.upload(make_step(tmp_path / "local", "global_step2", [1024]))
    big = make_step(tmp_path / "local", "global_step4", [12 * 2**20, 512])  # multipart
    uploader.upload(big)
    uploader.wait()
    keys = {o["Key"] for o in client().list_objects_v2(Bucket="ckpts")["Contents"]}
    assert "runs/a/latest" in keys and "runs/a/global_step4/file0.bin" in keys
    restored = download_latest("s3://ckpts/runs/a", tmp_path / "restored")
    assert restored is not None
    assert (restored / "latest").read_text().strip() == "global_step4"
    for name in ("file0.bin", "file1.bin"):
        assert (restored / "global_step4" / name).read_bytes() == (big / name).read_bytes()
    assert not (restored / "global_step2").exists()


def test_an_empty_store_has_nothing_to_load(store, tmp_path):
    assert download_latest("s3://ckpts/none", tmp_path / "x") is None


def test_addresses():
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b")
    assert S3Location.parse("s3://bucket").key("latest") == "latest"
    with pytest.raises(ConfigError, match="not an s3://bucket/prefix address"):
        S3Location.parse("https://bucket/a")


def test_a_run_uploads_its_checkpoints_and_another_resumes_from_s3(store, data_dir, tmp_path):
    from conftest import run_workers, tiny_config, write_config

    values = tiny_config(
        data_dir,
        tmp_path / "first",
        train_micro_batch_size_per_gpu=2,
        train_iters=4,
        lr_decay_iters=6,  # the schedule of both runs (a resume keeps the checkpoint's)
        checkpoint_factor=2,
        s3_path="s3://ckpts/run",
        s3_chunk_size=5 * 2**20,
    )
    run_workers([write_config(tmp_path / "first.yml", values)], 2)
    body = client().get_object(Bucket="ckpts", Key="run/latest")["Body"].read()
    assert body.decode() == "global_step4"
    keys = {o["Key"] for o in client().list_objects_v2(Bucket="ckpts")["Contents"]}
    assert {"run/global_step2/model.json", "run/global_step4/model.json"} <= keys
    again = dict(
        values, save=str(tmp_path / "second"), load="s3://ckpts/run", train_iters=6, s3_path=None
    )
    out = run_workers([write_config(tmp_path / "second.yml", again)], 2)
    assert f"resumed from {tmp_path / 'second' / 'from_s3'} at step 4" in out
    assert "AWS_SECRET_ACCESS_KEY" not in out  # credentials are never logged
