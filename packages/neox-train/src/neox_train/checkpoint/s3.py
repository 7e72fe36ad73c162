"""Checkpoints on S3 (or any S3-compatible store): `s3_path`, `s3_chunk_size`.

After each local save, rank 0 uploads the step directory in the background (multipart in
`s3_chunk_size` parts, each file retried), then the `latest` object, so that a reader never sees
a `latest` naming an incomplete step. `load: s3://bucket/prefix` downloads the newest complete
step first. The endpoint and credentials come from boto3's own configuration (environment,
~/.aws); neox never logs them. boto3 is the `s3` extra, imported when a run uses S3.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_model.checkpoint import LATEST, write_atomic
from neox_train.config.schema import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://") or not url[5:].split("/")[0]:
            raise ConfigError(f"{url!r} is not an s3://bucket/prefix address")
        bucket, _, prefix = url[5:].partition("/")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:
        raise ConfigError("S3 checkpoints need boto3: pip install 'neox-train[s3]'") from err
    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def _with_retries(action: Any, what: str, attempts: int = 3) -> None:
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except Exception as err:
            if attempt == attempts:
                raise
            log.warning(
                "S3 %s failed (%s); retry %d of %d", what, type(err).__name__, attempt, attempts - 1
            )
            time.sleep(2**attempt)


class S3Uploader:
    """Uploads step directories one after another on a background thread."""

    def __init__(self, url: str, chunk_size: int) -> None:
        from boto3.s3.transfer import TransferConfig

        self.location, self.client = S3Location.parse(url), client()
        self.transfer = TransferConfig(
            multipart_threshold=chunk_size, multipart_chunksize=chunk_size
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neox-s3")
        self.pending: list[Future[None]] = []

    def upload(self, step_dir: Path) -> None:
        self.pending.append(self.pool.submit(self._upload, step_dir))

    def _upload(self, step_dir: Path) -> None:
        for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
            key = self.location.key(step_dir.name, path.relative_to(step_dir).as_posix())
            _with_retries(
                lambda p=path, k=key: self.client.upload_file(
                    str(p), self.location.bucket, k, Config=self.transfer
                ),
                f"upload of {key}",
            )
        latest = self.location.key(LATEST)
        _with_retries(
            lambda: self.client.put_object(
                Bucket=self.location.bucket, Key=latest, Body=step_dir.name.encode()
            ),
            "latest",
        )
        log.info(
            "uploaded %s to s3://%s/%s",
            step_dir.name,
            self.location.bucket,
            self.location.key(step_dir.name),
        )

    def wait(self) -> None:
        """Block until every upload is done (raising the first failure)."""
        for future in self.pending:
            future.result()
        self.pending.clear()


def download_latest(url: str, destination: Path) -> Path | None:
    """Copy the newest complete step at `url` into `destination` (a run directory: the step and
    a `latest` pointer); None when the store holds no checkpoint."""
    location, s3 = S3Location.parse(url), client()
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.key(LATEST))["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    tag = body.decode().strip()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.key(tag) + "/"
    )
    for page in pages:
        for item in page.get("Contents", []):
            target = destination / tag / item["Key"][len(location.key(tag)) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(location.bucket, item["Key"], str(target))
    write_atomic(destination / LATEST, tag + "\n")
    log.info("downloaded %s from s3://%s/%s", tag, location.bucket, location.key(tag))
    return destination
