"""Model artifacts in S3, both ways: a model folder (``model.onnx``, ``card.json``, …) uploaded to
``s3://bucket/prefix/`` and downloaded back, as the Lambda handler (``MODEL_URI=s3://…``) and the
workers' boot script read them.

Uploads ask for server-side encryption: SSE-S3 (``AES256``) by default, or SSE-KMS with a key id
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/serv-side-encryption.html). S3 has encrypted
every new object with SSE-S3 by default since January 2023; asking explicitly makes a bucket policy
that denies unencrypted puts pass either way. Listings use the ``list_objects_v2`` paginator (1,000
keys a page).

IAM actions: ``s3:PutObject`` (and ``kms:GenerateDataKey`` with SSE-KMS) to upload;
``s3:ListBucket`` and ``s3:GetObject`` (and ``kms:Decrypt`` with SSE-KMS) to download.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` → ``(bucket, "prefix/")`` (the prefix ends with ``/`` unless empty).

    Raises:
        ValueError: not an ``s3://bucket[/prefix]`` URI.
    """
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"{uri!r}: expected s3://bucket/prefix/")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix.strip("/") else ""


def list_artifacts(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (``Key``, ``Size`` in bytes, ``ETag`` …), all pages.

    Raises:
        botocore.exceptions.ClientError: no such bucket, access denied, …
    """
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += page.get("Contents", [])
    return out


def upload_model(s3: Any, folder: Path, bucket: str, prefix: str, *, kms_key_id: str | None = None) -> list[str]:
    """Upload every file under ``folder`` to ``s3://bucket/prefix/<relative path>``, encrypted
    (SSE-S3, or SSE-KMS with ``kms_key_id``). Returns the keys written, sorted.

    Raises:
        FileNotFoundError: ``folder`` is not a directory or holds no file.
        botocore.exceptions.ClientError / boto3.exceptions.S3UploadFailedError: S3 refused.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no model files to upload")
    extra: dict[str, str] = (
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        if kms_key_id
        else {"ServerSideEncryption": "AES256"}
    )
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    keys = []
    for path in files:
        key = prefix + path.relative_to(folder).as_posix()
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
        keys.append(key)
    log.info("uploaded %d files of %s to s3://%s/%s", len(keys), folder, bucket, prefix)
    return keys


def download_model(s3: Any, bucket: str, prefix: str, dest: Path) -> list[Path]:
    """Download every object under ``s3://bucket/prefix/`` into ``dest`` (the relative layout kept).
    Returns the files written, sorted.

    Raises:
        FileNotFoundError: nothing under the prefix.
        ValueError: a key would land outside ``dest`` (``..`` in it).
        botocore.exceptions.ClientError: S3 refused.
    """
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    objects = [o for o in list_artifacts(s3, bucket, prefix) if not o["Key"].endswith("/")]
    if not objects:
        raise FileNotFoundError(f"s3://{bucket}/{prefix}: no objects")
    dest = Path(dest).resolve()
    written = []
    for obj in objects:
        target = (dest / obj["Key"][len(prefix) :]).resolve()
        if not target.is_relative_to(dest):
            raise ValueError(f"s3://{bucket}/{obj['Key']}: would be written outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(target))
        written.append(target)
    return sorted(written)
