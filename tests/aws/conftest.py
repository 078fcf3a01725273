"""Fixtures for tests of AWS calls: moto only, never a real account."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, and no endpoint or profile from the environment, so a test can only
    reach moto (a leaked real endpoint or profile would otherwise be used)."""
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def moto(aws_credentials: None) -> Iterator[None]:
    """moto's in-process AWS (Lambda without Docker) for the test's duration."""
    from moto import mock_aws

    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> str:
    """A deployment name of the test's own (moto's state is shared by every test in a process)."""
    return "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
