"""The AWS backend's EC2 side on moto: launches (on-demand, spot) with the deployment's tags and
IMDSv2, termination, a restarted controller adopting the fleet (no leak, no duplicate, a retried
launch token included), capacity errors falling back to another pool with a per-pool backoff."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from orchestrator.cloud.aws.cloud import AwsCloud, AwsCloudConfig, fallback_pools
from orchestrator.cloud.aws.ec2 import IMDS_V2, LaunchSettings, NoCapacity, PoolBackoff, PoolUnavailable
from orchestrator.cloud.aws.session import AwsSession, AwsSessionSettings
from orchestrator.cloud.aws.tags import DEPLOYMENT_TAG, POOL_TAG, Pool, fleet_from_tags, tags_of
from orchestrator.cloud.base import CapacityError
from orchestrator.types import InstanceState, Market

TYPES = ("c5.large", "c5.xlarge")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _ami() -> str:
    return str(boto3.client("ec2", region_name="us-east-1").describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def _cloud(deployment: str, clock: Clock | None = None, **kw: Any) -> AwsCloud:
    session = AwsSession(AwsSessionSettings(region="us-east-1", retry_mode="standard", max_attempts=2))
    config = AwsCloudConfig(deployment, LaunchSettings(image_id=_ami()), TYPES, **kw)
    return AwsCloud(config, session, clock=clock or Clock(), backoff=PoolBackoff(base_s=60, max_s=600))


def _refuse(cloud: AwsCloud, code: str, when: Any) -> list[dict[str, Any]]:
    """Make RunInstances fail with ``code`` whenever ``when(params)`` holds (moto never runs out of
    capacity by itself); returns the list of every RunInstances call's params."""
    calls: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)
        if when(params):
            raise ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, "RunInstances")

    cloud.ec2.client.meta.events.register("before-parameter-build.ec2.RunInstances", hook)
    return calls


def _spot(params: dict[str, Any]) -> bool:
    return "InstanceMarketOptions" in params


def test_launch_on_demand_and_spot_tagged_with_imdsv2_then_terminate(moto: None, deployment: str) -> None:
    cloud = _cloud(deployment)
    od = asyncio.run(cloud.launch("c5.large", Market.ON_DEMAND, 2))
    spot = asyncio.run(cloud.launch("c5.xlarge", Market.SPOT, 1))
    assert [(i.instance_type, i.market) for i in od + spot] == [("c5.large", Market.ON_DEMAND)] * 2 + [
        ("c5.xlarge", Market.SPOT)
    ]
    assert all(i.state is InstanceState.PENDING for i in od + spot)  # EC2 "pending" = booting

    ec2 = cloud.ec2.client
    described = {d["InstanceId"]: d for d in fleet_from_tags(ec2, deployment)}
    assert set(described) == {i.id for i in od + spot}
    for inst in od + spot:
        d = described[inst.id]
        tags = tags_of(d)
        assert tags[DEPLOYMENT_TAG] == deployment
        assert tags[POOL_TAG] == f"{inst.instance_type}/{inst.market.value}"
        assert d["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    assert described[spot[0].id]["InstanceLifecycle"] == "spot"
    assert "InstanceLifecycle" not in described[od[0].id]
    # the launch template itself requires IMDSv2 (and tags what it launches)
    for t in ("c5.large", "c5.xlarge"):
        data = ec2.describe_launch_template_versions(LaunchTemplateName=f"mark-{deployment}-{t}")[
            "LaunchTemplateVersions"
        ][0]["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == IMDS_V2["HttpTokens"] == "required"
        assert data["InstanceType"] == t

    cloud.ec2.wait_running([i.id for i in od], delay_s=1, max_attempts=3)
    states = {i.id: i.state for i in asyncio.run(cloud.refresh())}
    assert states[od[0].id] is InstanceState.RUNNING
    running = next(i for i in cloud.instances() if i.id == od[0].id)
    assert running.endpoint and running.endpoint.endswith(":8080") and running.ready_at is not None

    asyncio.run(cloud.terminate([od[0].id, spot[0].id]))
    by_id = {i.id: i for i in cloud.instances()}
    assert by_id[od[0].id].state is InstanceState.TERMINATED and by_id[od[0].id].terminated_at is not None
    assert by_id[od[1].id].state is not InstanceState.TERMINATED
    live = {d["InstanceId"] for d in fleet_from_tags(ec2, deployment)}
    assert live == {od[1].id}
    # another deployment's instance (or a stranger's) is never terminated by this one
    other = _cloud(deployment + "-other")
    with pytest.raises(ValueError, match="not instances of deployment"):
        asyncio.run(other.terminate([od[1].id]))
    assert {d["InstanceId"] for d in fleet_from_tags(ec2, deployment)} == {od[1].id}


def test_a_restarted_controller_adopts_the_fleet_and_a_retried_launch_duplicates_nothing(
    moto: None, deployment: str
) -> None:
    first = _cloud(deployment)
    launched = asyncio.run(first.launch("c5.large", Market.ON_DEMAND, 2, client_token="tick-42-c5.large-od"))
    spot = asyncio.run(first.launch("c5.large", Market.SPOT, 1, client_token="tick-42-c5.large-spot"))
    gone = asyncio.run(first.launch("c5.large", Market.ON_DEMAND, 1))
    asyncio.run(first.terminate([gone[0].id]))
    # someone else's instance in the same account is not adopted
    _cloud(deployment + "-neighbour").launch_sync("c5.large", Market.ON_DEMAND, 1)

    # The controller restarts: a new backend on the same account sees exactly what the first launched.
    second = asyncio.run(AwsCloud.adopt(first.config, first.session, clock=Clock()))
    live = {i.id: i for i in second.instances() if i.state is not InstanceState.TERMINATED}
    assert set(live) == {i.id for i in launched + spot}  # 0 leaked, none foreign
    assert {i.id: i.market for i in live.values()} == {i.id: i.market for i in launched + spot}
    assert gone[0].id in {i.id for i in second.instances() if i.state is InstanceState.TERMINATED}

    # It replays the tick whose launch it cannot tell went through: same tokens, no new instance.
    again = asyncio.run(second.launch("c5.large", Market.ON_DEMAND, 2, client_token="tick-42-c5.large-od"))
    again_spot = asyncio.run(second.launch("c5.large", Market.SPOT, 1, client_token="tick-42-c5.large-spot"))
    assert sorted(i.id for i in again) == sorted(i.id for i in launched)
    assert [i.id for i in again_spot] == [spot[0].id]
    assert len(fleet_from_tags(second.ec2.client, deployment)) == 3  # 0 duplicated


def test_a_capacity_error_falls_back_to_another_pool_and_the_failed_pool_backs_off(
    moto: None, deployment: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    cloud = _cloud(deployment, clock)
    calls = _refuse(cloud, "InsufficientInstanceCapacity", lambda p: _spot(p) and p["InstanceType"] == "c5.large")
    caplog.set_level(logging.INFO, logger="orchestrator.cloud.aws")
    got = asyncio.run(cloud.launch("c5.large", Market.SPOT, 1))
    assert [(i.instance_type, i.market) for i in got] == [("c5.xlarge", Market.SPOT)]  # the next spot pool
    assert "pool c5.large/spot unavailable (InsufficientInstanceCapacity): kept out for 60 s" in caplog.text
    assert "falling back to c5.xlarge/spot" in caplog.text
    assert cloud.ec2.backoff.blocked_until(Pool("c5.large", Market.SPOT)) == clock.t + 60

    # Within the backoff the failed pool is not even asked.
    n = len(calls)
    clock.t += 30
    got = asyncio.run(cloud.launch("c5.large", Market.SPOT, 1))
    assert got[0].instance_type == "c5.xlarge" and len(calls) == n + 1
    assert "pool c5.large/spot skipped: in backoff for 30 s more" in caplog.text

    # After it, it is tried again; a second failure doubles the wait.
    clock.t += 31
    asyncio.run(cloud.launch("c5.large", Market.SPOT, 1))
    assert len(calls) == n + 3
    assert cloud.ec2.backoff.blocked_until(Pool("c5.large", Market.SPOT)) == clock.t + 120


def test_spot_quota_falls_back_to_on_demand_and_all_pools_failing_is_a_capacity_error(
    moto: None, deployment: str, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = _cloud(deployment)
    _refuse(cloud, "MaxSpotInstanceCountExceeded", _spot)
    caplog.set_level(logging.INFO, logger="orchestrator.cloud.aws")
    got = asyncio.run(cloud.launch("c5.large", Market.SPOT, 1))
    assert [(i.instance_type, i.market) for i in got] == [("c5.large", Market.ON_DEMAND)]
    assert "launched in fallback pool c5.large/on-demand instead of c5.large/spot" in caplog.text

    full = _cloud(deployment + "-full")
    _refuse(full, "InstanceLimitExceeded", lambda p: True)
    with pytest.raises(CapacityError) as e:
        asyncio.run(full.launch("c5.large", Market.ON_DEMAND, 1))
    assert isinstance(e.value, NoCapacity)
    assert set(e.value.failures) == {Pool("c5.large", Market.ON_DEMAND), Pool("c5.xlarge", Market.ON_DEMAND)}
    assert "c5.large/on-demand: InstanceLimitExceeded" in str(e.value)
    assert fleet_from_tags(full.ec2.client, deployment + "-full") == []


class _Raw:
    """The body of a fake HTTP answer, as botocore reads it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def test_throttling_is_retried_by_botocore_with_the_same_token_then_raised_naming_the_pool(
    moto: None, deployment: str
) -> None:
    cloud = _cloud(deployment)
    sent: list[str] = []
    throttled = (
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
        b"</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
    )

    def answer_503(request: Any, **_: Any) -> AWSResponse | None:  # EC2's throttling answer, on the wire
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if "Action=RunInstances" not in body:
            return None
        sent.append(body)
        return AWSResponse(request.url, 503, {}, _Raw(throttled))

    cloud.ec2.client.meta.events.register_first("before-send.ec2.RunInstances", answer_503)
    with pytest.raises(PoolUnavailable, match=r"pool c5.large/spot: RequestLimitExceeded") as e:
        asyncio.run(cloud.launch("c5.large", Market.SPOT, 1))
    assert e.value.throttled and e.value.pool == Pool("c5.large", Market.SPOT)
    # botocore retried the call itself (max_attempts=2 here), resending the same ClientToken; a
    # throttle is account-wide, so no other pool was tried and no pool was put in backoff
    tokens = {parse_qs(b)["ClientToken"][0] for b in sent}
    assert len(sent) == 2 and len(tokens) == 1
    assert cloud.ec2.backoff.blocked_until(Pool("c5.large", Market.SPOT)) is None


def test_backoff_and_fallback_order_are_pure() -> None:
    b = PoolBackoff(base_s=10, max_s=35)
    p = Pool("g4dn.xlarge", Market.SPOT)
    assert b.available(p, 0.0)
    assert [b.record_failure(p, 100.0) for _ in range(4)] == [110.0, 120.0, 135.0, 135.0]
    assert not b.available(p, 134.9) and b.available(p, 135.0)
    b.record_success(p)
    assert b.available(p, 100.0) and b.blocked_until(p) is None
    assert [str(x) for x in fallback_pools(Pool("a", Market.SPOT), ("a", "b"))] == [
        "a/spot",
        "b/spot",
        "a/on-demand",
        "b/on-demand",
    ]
    assert [str(x) for x in fallback_pools(Pool("b", Market.ON_DEMAND), ("a", "b"))] == ["b/on-demand", "a/on-demand"]
    assert Pool.from_tag("c5.large/spot") == Pool("c5.large", Market.SPOT)
    with pytest.raises(ValueError):
        Pool.from_tag("c5.large")
