"""S3 model artifacts both ways on moto, and the session: retry mode, endpoint override, no secret
in its repr or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
import pytest

from inference.repository import ModelRepository
from orchestrator.cloud.aws.artifacts import download_model, list_artifacts, parse_s3_uri, upload_model
from orchestrator.cloud.aws.session import AwsSession, AwsSessionSettings
from orchestrator.config import AwsBackend


def test_model_round_trip_through_s3_encrypted(
    moto: None, digits_repo: ModelRepository, tmp_path: Path, deployment: str
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=deployment)
    folder = digits_repo.model_dir("digits_mlp_small")
    (tmp_path / "extra").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    for p in folder.iterdir():
        (model / p.name).write_bytes(p.read_bytes())
    (model / "sub").mkdir()
    (model / "sub" / "notes.txt").write_text("nested files keep their place")
    bucket, prefix = parse_s3_uri(f"s3://{deployment}/zoo/digits_mlp_small/")
    keys = upload_model(s3, model, bucket, prefix)
    assert "zoo/digits_mlp_small/model.onnx" in keys and "zoo/digits_mlp_small/sub/notes.txt" in keys
    for key in keys:
        assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
    # a neighbour prefix is not part of the model
    s3.put_object(Bucket=bucket, Key="zoo/digits_mlp_small_v2/model.onnx", Body=b"other")
    assert sorted(o["Key"] for o in list_artifacts(s3, bucket, prefix)) == sorted(keys)

    got = download_model(s3, bucket, prefix, tmp_path / "down")
    assert [p.relative_to(tmp_path / "down").as_posix() for p in got] == sorted(
        p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()
    )
    for p in got:
        assert p.read_bytes() == (model / p.relative_to(tmp_path / "down")).read_bytes()
    with pytest.raises(FileNotFoundError):
        download_model(s3, bucket, "zoo/none/", tmp_path / "none")
    with pytest.raises(FileNotFoundError):
        upload_model(s3, tmp_path / "extra", bucket, prefix)
    with pytest.raises(ValueError):
        parse_s3_uri("https://bucket/x")
    assert parse_s3_uri("s3://b") == ("b", "")


def test_listing_pages_through_more_than_one_page(moto: None, deployment: str) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=deployment)
    for i in range(1005):  # one page holds 1,000 keys
        s3.put_object(Bucket=deployment, Key=f"m/{i:04d}", Body=b"")
    assert len(list_artifacts(s3, deployment, "m/")) == 1005


def test_session_retries_endpoint_and_no_secret_in_repr_or_logs(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-that-must-not-leak")
    caplog.set_level(logging.DEBUG, logger="orchestrator.cloud.aws")
    backend = AwsBackend(name="aws", region="eu-west-1", endpoint_url="http://127.0.0.1:4566")
    session = AwsSession.from_backend(backend)
    ec2 = session.client("ec2")
    assert ec2.meta.endpoint_url == "http://127.0.0.1:4566" and ec2.meta.region_name == "eu-west-1"
    assert ec2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 5}
    assert session.client("ec2") is ec2  # cached
    once = session.client("lambda", max_attempts=1)
    assert once.meta.config.retries["total_max_attempts"] == 1
    for text in (repr(session), str(session), caplog.text, repr(session.settings), repr(backend)):
        assert secret not in text and "session-token" not in text and "testing" not in text
    assert "eu-west-1" in repr(session) and "adaptive/5" in repr(session)
    with pytest.raises(ValueError, match="max_attempts"):
        AwsSession(AwsSessionSettings(max_attempts=0))

    # without endpoint_url, boto3 honours AWS_ENDPOINT_URL by itself (botocore >= 1.31.57)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4999")
    plain = AwsSession(AwsSessionSettings(region="us-east-1", retry_mode="standard", max_attempts=3))
    assert plain.client("s3").meta.endpoint_url == "http://127.0.0.1:4999"
    assert plain.client("s3").meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
