"""The AWS backend through the endpoint-override path: a real ``moto_server`` process on 127.0.0.1,
reached over HTTP via ``AwsBackend.endpoint_url`` (as LocalStack would be) and via ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from orchestrator.cloud.aws.cloud import AwsCloud, AwsCloudConfig
from orchestrator.cloud.aws.ec2 import LaunchSettings
from orchestrator.cloud.aws.session import AwsSession, AwsSessionSettings
from orchestrator.cloud.aws.tags import fleet_from_tags
from orchestrator.config import AwsBackend
from orchestrator.types import InstanceState, Market
from tests.conftest import free_port

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """``moto_server -H 127.0.0.1 -p PORT`` on a free port; stopped by its PID at the end."""
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} not installed (moto[server])")
    port = free_port()
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    pytest.fail(f"moto_server did not start on {url}: {err[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def server(moto_server: str, aws_credentials: None) -> str:
    """The server, emptied (``POST /moto-api/reset``) before the test."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=5).close()
    return moto_server


def test_the_backend_works_against_moto_server_through_endpoint_url(server: str, deployment: str) -> None:
    session = AwsSession.from_backend(AwsBackend(name="aws", region="us-east-1", endpoint_url=server))
    ec2 = session.client("ec2")
    assert ec2.meta.endpoint_url == server
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    sqs = session.client("sqs")
    queue = sqs.create_queue(QueueName=f"{deployment}-spot")["QueueUrl"]
    config = AwsCloudConfig(deployment, LaunchSettings(ami), ("c5.large",), queue)
    cloud = AwsCloud(config, session)
    spot = asyncio.run(cloud.launch("c5.large", Market.SPOT, 2, client_token="tick-1"))
    event = {
        "version": "0",
        "id": "1",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"instance-id": spot[0].id, "instance-action": "terminate"},
    }
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))

    adopted = asyncio.run(AwsCloud.adopt(config, AwsSession.from_backend(AwsBackend(name="aws", endpoint_url=server))))
    assert {i.id for i in adopted.instances()} == {i.id for i in spot}
    assert [n.instance_id for n in adopted.interruption_notices()] == [spot[0].id]
    assert asyncio.run(adopted.launch("c5.large", Market.SPOT, 2, client_token="tick-1")) == [
        i for i in adopted.instances() if i.id in {s.id for s in spot}
    ]
    asyncio.run(adopted.terminate([i.id for i in spot]))
    assert all(i.state is InstanceState.TERMINATED for i in adopted.instances())
    assert fleet_from_tags(ec2, deployment) == []


def test_aws_endpoint_url_from_the_environment_reaches_moto_server(
    server: str, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)  # boto3 reads it by itself (botocore >= 1.31.57)
    session = AwsSession(AwsSessionSettings(region="us-east-1"))
    s3 = session.client("s3")
    assert s3.meta.endpoint_url == server
    s3.create_bucket(Bucket=deployment)
    # the bucket is on the server, not in some other place: a plain client pointed at it sees it
    plain = boto3.client("s3", region_name="us-east-1", endpoint_url=server)
    assert deployment in [b["Name"] for b in plain.list_buckets()["Buckets"]]
