"""``AwsCloud``: the :class:`~orchestrator.cloud.base.Cloud` interface over EC2 (DESIGN.md §4).

The front door reads ``instances()`` on every request, so ``instances()`` and
``interruption_notices()`` answer from memory: the fleet as of the last :meth:`AwsCloud.refresh`
(one paginated ``DescribeInstances`` filtered by the deployment tag, plus one poll of the
interruption queue), kept current by :meth:`AwsCloud.start`'s background loop or by the caller.
:meth:`AwsCloud.adopt` builds one and refreshes it at once: a restarted controller sees exactly the
instances its deployment's tags name, so nothing leaks and nothing is launched twice.

EC2 states map to :class:`~orchestrator.types.InstanceState`: ``pending`` → PENDING (booting);
``running`` → RUNNING (DRAINING once a spot notice names it or it is being terminated);
``shutting-down``/``terminated``/``stopping``/``stopped`` → TERMINATED (this backend never stops an
instance; a stopped one serves nothing). A running instance's endpoint is its private IP and the
worker port; whether the worker answers is the front door's health check, not EC2's state.

Blocking boto3 calls run in a thread (``asyncio.to_thread``). Times are Unix seconds (``time.time``):
EC2 reports launch times as calendar times.

IAM actions: those of ``ec2.py`` and ``interruptions.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orchestrator.cloud.aws.ec2 import Ec2, LaunchSettings, PoolBackoff, new_client_token
from orchestrator.cloud.aws.interruptions import InterruptionQueue, RebalanceRecommendation, SpotInterruption
from orchestrator.cloud.aws.session import AwsSession
from orchestrator.cloud.aws.tags import POOL_TAG, Pool, tags_of
from orchestrator.cloud.base import Cloud, Instance, InterruptionNotice
from orchestrator.types import InstanceState, Market

log = logging.getLogger(__name__)

STATE = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.TERMINATED,
    "terminated": InstanceState.TERMINATED,
    "stopping": InstanceState.TERMINATED,
    "stopped": InstanceState.TERMINATED,
}


@dataclass(frozen=True)
class AwsCloudConfig:
    """One deployment's EC2 fleet.

    ``instance_types``: the allowed types, in fallback order (a refused pool falls back to the next
    type in the same market, then, for spot, to on-demand of the requested type);
    ``interruption_queue_url``: the SQS queue EventBridge feeds (None: no notices from the cloud, only
    the workers' own metadata polling); ``worker_port``: where the worker listens.
    """

    deployment: str
    launch: LaunchSettings
    instance_types: tuple[str, ...] = ()
    interruption_queue_url: str | None = None
    worker_port: int = 8080
    fallback: bool = True


def fallback_pools(requested: Pool, instance_types: tuple[str, ...]) -> list[Pool]:
    """Where to launch when ``requested`` refuses, best first: the requested pool; the other allowed
    types in the same market; for spot, on-demand of the requested type, then of the others."""
    others = [t for t in instance_types if t != requested.instance_type]
    pools = [requested] + [Pool(t, requested.market) for t in others]
    if requested.market is Market.SPOT:
        pools += [Pool(requested.instance_type, Market.ON_DEMAND)] + [Pool(t, Market.ON_DEMAND) for t in others]
    return pools


class AwsCloud(Cloud):
    """The deployment's EC2 fleet as a :class:`Cloud`. Build it with :meth:`adopt` (or call
    :meth:`refresh` before reading ``instances()``).

    ``queue_wait_s``: the interruption queue's long poll per refresh, in seconds (at least 1: a short
    poll samples only some SQS servers and can miss a message,
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html;
    it returns as soon as a message is there)."""

    def __init__(
        self,
        config: AwsCloudConfig,
        session: AwsSession,
        *,
        clock: Callable[[], float] = time.time,
        backoff: PoolBackoff | None = None,
        queue_wait_s: int = 1,
    ) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self.ec2 = Ec2(session.client("ec2"), config.deployment, config.launch, backoff=backoff, clock=clock)
        self.queue = (
            InterruptionQueue(session.client("sqs"), config.interruption_queue_url, wait_s=queue_wait_s)
            if config.interruption_queue_url
            else None
        )
        self._fleet: dict[str, Instance] = {}
        self._notices: dict[str, InterruptionNotice] = {}
        self._rebalance: dict[str, RebalanceRecommendation] = {}
        self._terminating: dict[str, float] = {}  # id -> when we asked
        self._ready_at: dict[str, float] = {}  # id -> when first seen running
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def adopt(cls, config: AwsCloudConfig, session: AwsSession, **kwargs: Any) -> AwsCloud:
        """A backend that has already read the deployment's fleet from EC2 (a restarted controller).

        Raises:
            botocore.exceptions.ClientError: DescribeInstances failed after botocore's retries.
        """
        cloud = cls(config, session, **kwargs)
        await cloud.refresh()
        return cloud

    def now(self) -> float:
        """Unix seconds (wall clock), the clock EC2's launch times are on."""
        return self.clock()

    # -- state -------------------------------------------------------------------------------------

    def _instance(self, d: dict[str, Any]) -> Instance:
        iid = d["InstanceId"]
        tags = tags_of(d)
        if d.get("InstanceLifecycle") == "spot":
            market = Market.SPOT
        else:
            try:
                market = Pool.from_tag(tags[POOL_TAG]).market
            except (KeyError, ValueError):
                market = Market.ON_DEMAND
        ec2_state = d.get("State", {}).get("Name", "pending")
        state = STATE.get(ec2_state, InstanceState.PENDING)
        notice = self._notices.get(iid)
        now = self.clock()
        if state is InstanceState.RUNNING:
            self._ready_at.setdefault(iid, now)
            if notice is not None or iid in self._terminating:
                state = InstanceState.DRAINING
        launched = d.get("LaunchTime")
        launched_at = launched.timestamp() if isinstance(launched, datetime) else now
        ip = d.get("PrivateIpAddress")
        return Instance(
            id=iid,
            instance_type=d.get("InstanceType", ""),
            market=market,
            state=state,
            launched_at=launched_at,
            endpoint=f"{ip}:{self.config.worker_port}" if ip and state is not InstanceState.TERMINATED else None,
            ready_at=self._ready_at.get(iid),
            terminated_at=(self._terminating.get(iid, now) if state is InstanceState.TERMINATED else None),
            interruption_at=notice.terminate_at if notice else None,
        )

    def _absorb(self, described: list[dict[str, Any]]) -> list[Instance]:
        out = [self._instance(d) for d in described]
        for inst in out:
            self._fleet[inst.id] = inst
        return out

    def refresh_sync(self) -> list[Instance]:
        """Read the fleet (and pending notices) from AWS now; blocking.

        Raises:
            botocore.exceptions.ClientError: a call failed after botocore's retries.
        """
        if self.queue is not None:
            for event in self.queue.poll():
                if isinstance(event, SpotInterruption):
                    self._notices.setdefault(event.instance_id, event.notice())
                else:
                    self._rebalance.setdefault(event.instance_id, event)
        described = self.ec2.describe(include_terminated=True)
        seen = {d["InstanceId"] for d in described}
        for iid in list(self._fleet):  # gone from DescribeInstances (terminated > ~1 h ago)
            if iid not in seen and self._fleet[iid].state is not InstanceState.TERMINATED:
                self._fleet[iid] = self._fleet_terminated(self._fleet[iid])
        self._absorb(described)
        return self.instances()

    def _fleet_terminated(self, inst: Instance) -> Instance:
        return replace(inst, state=InstanceState.TERMINATED, endpoint=None, terminated_at=self.clock())

    async def refresh(self) -> list[Instance]:
        """:meth:`refresh_sync` in a thread."""
        return await asyncio.to_thread(self.refresh_sync)

    def start(self, period_s: float = 5.0) -> None:
        """Refresh every ``period_s`` seconds in the background until :meth:`close` (errors are logged
        and the loop goes on: a failed describe must not stop the front door). Needs a running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(period_s))

    async def _loop(self, period_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # noqa: BLE001 — logged; the next round retries
                log.warning("aws refresh failed: %s", e)
            await asyncio.sleep(period_s)

    # -- Cloud -------------------------------------------------------------------------------------

    def launch_sync(
        self, instance_type: str, market: Market, count: int = 1, client_token: str | None = None
    ) -> list[Instance]:
        """Blocking :meth:`launch`."""
        token = client_token or new_client_token()
        requested = Pool(instance_type, Market(market))
        pools = fallback_pools(requested, self.config.instance_types) if self.config.fallback else [requested]
        _, described = self.ec2.launch_with_fallback(pools, count, token)
        return self._absorb(described)

    async def launch(
        self, instance_type: str, market: Market, count: int = 1, client_token: str | None = None
    ) -> list[Instance]:
        """Launch ``count`` instances of ``instance_type`` in ``market`` (or a fallback pool: each
        returned ``Instance`` says where it really runs). ``client_token`` makes the launch
        idempotent: the same token again returns the first call's instances (default: a new token).

        Raises:
            PoolUnavailable: throttled. NoCapacity: every pool refused or is in backoff (both are
            ``CapacityError``s). botocore.exceptions.ClientError: any other refusal.
        """
        return await asyncio.to_thread(self.launch_sync, instance_type, market, count, client_token)

    async def terminate(self, instance_ids: list[str]) -> None:
        """Terminate the instances (this deployment's only).

        Raises:
            ValueError: an id is not this deployment's. botocore.exceptions.ClientError: EC2 refused.
        """
        now = self.clock()
        done = await asyncio.to_thread(self.ec2.terminate, instance_ids)
        for iid in done:
            self._terminating.setdefault(iid, now)
            if iid in self._fleet:
                self._fleet[iid] = self._fleet_terminated(self._fleet[iid])

    def instances(self) -> list[Instance]:
        """Every instance of the deployment as of the last refresh/launch/terminate, terminated ones included."""
        return sorted(self._fleet.values(), key=lambda i: (i.launched_at, i.id))

    def interruption_notices(self) -> list[InterruptionNotice]:
        """Spot interruption warnings read from the queue so far (one per instance)."""
        return sorted(self._notices.values(), key=lambda n: (n.noticed_at, n.instance_id))

    def rebalance_recommendations(self) -> list[RebalanceRecommendation]:
        """Instances EC2 flagged at elevated interruption risk (no deadline; replace when convenient)."""
        return sorted(self._rebalance.values(), key=lambda r: (r.noticed_at, r.instance_id))

    def add_notice(self, notice: InterruptionNotice) -> None:
        """Record a notice learnt elsewhere (a worker's metadata poll reported through the front door)."""
        self._notices.setdefault(notice.instance_id, notice)

    async def close(self) -> None:
        """Stop the background refresh. Instances keep running: they are the deployment's, not this
        process's (terminate them explicitly)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
