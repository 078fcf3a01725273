"""The Lambda handler's S3 model artifacts (MODEL_URI=s3://...), against moto's S3."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import orjson
import pytest
from moto import mock_aws

from inference.repository import ModelRepository
from lambda_fn import handler as fn
from tests.integration.test_worker_bad_input import GOOD
from tests.surfaces import ctx, function_url_event


def test_model_uri_s3_downloads_once_to_tmp(
    digits_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, aws_credentials: None
) -> None:
    monkeypatch.setenv("MARK_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MODEL_URI", "s3://mark-models/zoo/digits_mlp_small/")
    fn._reset_for_tests()
    doc = orjson.dumps({"inputs": [GOOD]})
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="mark-models")
            r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", doc), ctx())
            assert r["statusCode"] == 503  # not uploaded yet: a clear error, and the next call retries
            assert "s3://mark-models/zoo/digits_mlp_small/model.onnx" in json.loads(r["body"])["error"]
            folder = digits_repo.model_dir("digits_mlp_small")
            for name in ("model.onnx", "card.json"):
                s3.upload_file(str(folder / name), "mark-models", f"zoo/digits_mlp_small/{name}")
            r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", doc), ctx())
            assert r["statusCode"] == 200, r["body"]
            cached = list((tmp_path / "cache").iterdir())
            assert len(cached) == 1 and (cached[0] / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
            # A new environment on the same host: /tmp survives, so S3 is not asked again (the object
            # is gone, so asking would fail).
            s3.delete_object(Bucket="mark-models", Key="zoo/digits_mlp_small/model.onnx")
            fn._reset_for_tests()
            r = fn.handler(function_url_event("POST", "/v2/models/digits_mlp_small/infer", doc), ctx())
            assert r["statusCode"] == 200
    finally:
        fn._reset_for_tests()
