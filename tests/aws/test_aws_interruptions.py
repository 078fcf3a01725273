"""Spot notices on moto's SQS: the EventBridge event shapes AWS documents, long-poll receive, delete
after handling, malformed messages logged and dropped; and the instance-metadata document."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import boto3
import pytest

from orchestrator.cloud.aws.cloud import AwsCloud, AwsCloudConfig
from orchestrator.cloud.aws.ec2 import LaunchSettings
from orchestrator.cloud.aws.interruptions import (
    SPOT_NOTICE_S,
    InterruptionQueue,
    MalformedEvent,
    RebalanceRecommendation,
    SpotInterruption,
    parse_event,
    parse_instance_action,
)
from orchestrator.cloud.aws.session import AwsSession, AwsSessionSettings
from orchestrator.types import InstanceState, Market

T0 = "2026-11-22T10:00:00Z"
T0_S = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()


def warning(instance_id: str, action: str = "terminate", time: str = T0) -> dict[str, object]:
    """An "EC2 Spot Instance Interruption Warning" as EventBridge delivers it (AWS's documented example)."""
    return {
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": time,
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": action},
    }


def rebalance(instance_id: str) -> dict[str, object]:
    """An "EC2 Instance Rebalance Recommendation" (AWS's documented example)."""
    return {
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Instance Rebalance Recommendation",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": T0,
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
        "detail": {"instance-id": instance_id},
    }


def test_event_shapes_parse_and_bad_ones_are_typed_errors() -> None:
    w = parse_event(json.dumps(warning("i-0abc")))
    assert w == SpotInterruption("i-0abc", "terminate", T0_S, T0_S + 120.0) and SPOT_NOTICE_S == 120.0
    assert w.notice().terminate_at - w.notice().noticed_at == 120.0
    assert parse_event(rebalance("i-0abc")) == RebalanceRecommendation("i-0abc", T0_S)
    sns = {"Type": "Notification", "Message": json.dumps(warning("i-0def", "stop"))}
    assert parse_event(json.dumps(sns)) == SpotInterruption("i-0def", "stop", T0_S, T0_S + 120.0)
    other = dict(warning("i-0abc"), **{"detail-type": "EC2 Instance State-change Notification"})
    assert parse_event(other) is None
    for bad in ("not json", "[1]", json.dumps({"x": 1}), json.dumps(dict(warning("i-1"), detail={}))):
        with pytest.raises(MalformedEvent):
            parse_event(bad)
    with pytest.raises(MalformedEvent, match="ISO 8601"):
        parse_event(warning("i-1", time="yesterday"))
    # the worker's 5 s poll of http://169.254.169.254/latest/meta-data/spot/instance-action
    doc = '{"action": "terminate", "time": "2026-11-22T10:02:00Z"}'
    assert parse_instance_action(doc, "i-0abc") == SpotInterruption("i-0abc", "terminate", T0_S, T0_S + 120.0)
    with pytest.raises(MalformedEvent):
        parse_instance_action("<html>404 - Not Found</html>", "i-0abc")


def test_an_sqs_interruption_message_becomes_a_notice_and_drains_the_instance(
    moto: None, deployment: str, caplog: pytest.LogCaptureFixture
) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"{deployment}-spot")["QueueUrl"]
    ami = boto3.client("ec2", region_name="us-east-1").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    session = AwsSession(AwsSessionSettings(region="us-east-1"))
    cloud = AwsCloud(AwsCloudConfig(deployment, LaunchSettings(ami), ("c5.large",), url), session)
    spot = asyncio.run(cloud.launch("c5.large", Market.SPOT, 2))
    cloud.ec2.wait_running([i.id for i in spot], delay_s=1, max_attempts=3)

    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(warning(spot[0].id)))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(rebalance(spot[1].id)))
    sqs.send_message(QueueUrl=url, MessageBody="{ this is not an event")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(dict(warning("i-x"), detail={"instance-action": "stop"})))
    caplog.set_level(logging.INFO, logger="orchestrator.cloud.aws")
    asyncio.run(cloud.refresh())  # never raises on a bad message

    assert cloud.interruption_notices()[0].instance_id == spot[0].id
    assert len(cloud.interruption_notices()) == 1
    n = cloud.interruption_notices()[0]
    assert (n.noticed_at, n.terminate_at) == (T0_S, T0_S + 120.0)
    assert [r.instance_id for r in cloud.rebalance_recommendations()] == [spot[1].id]
    by_id = {i.id: i for i in cloud.instances()}
    assert by_id[spot[0].id].state is InstanceState.DRAINING and by_id[spot[0].id].interruption_at == T0_S + 120.0
    assert by_id[spot[1].id].state is InstanceState.RUNNING
    assert cloud.queue is not None and cloud.queue.malformed == 2
    assert "dropped malformed message" in caplog.text
    # every message was deleted after handling, the malformed ones too: nothing comes back
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert InterruptionQueue(sqs, url, wait_s=1).poll() == []  # a long poll that finds nothing
    # a duplicate delivery (SQS is at-least-once) changes nothing
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(warning(spot[0].id, time="2026-11-22T10:00:30Z")))
    asyncio.run(cloud.refresh())
    assert cloud.interruption_notices() == [n]
