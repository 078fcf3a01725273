"""EC2 for one deployment: the only module that launches or terminates instances (DESIGN.md §4).

- **Launch templates**, one per instance type (``mark-<deployment>-<type>``): the AMI, subnet-free
  network settings, the instance profile, user data, tags, and **IMDSv2 required**
  (``MetadataOptions.HttpTokens=required``: a metadata request without a session token gets 401,
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-new-instances.html). The
  same ``MetadataOptions`` go on every ``RunInstances`` too, so an edited template cannot turn it off.
- **Launches** by ``RunInstances`` (on-demand, or spot with ``InstanceMarketOptions``: one-time,
  terminate on interruption), each with a ``ClientToken``: EC2 answers a repeated request with the
  same token and parameters with the first request's instances instead of new ones; a token is
  honoured for at least 7 days after the request
  (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html). botocore's retries
  resend the same token. On top, the token is also a tag (``mark:launch-token``) and a launch first
  looks for instances carrying it, so a launch retried by a *restarted* controller (or against an
  emulator that ignores ``ClientToken``, such as moto) adopts the first attempt's instances.
- **Capacity and quota errors** (:data:`CAPACITY_CODES`) become :class:`PoolUnavailable`, naming the
  pool; :class:`PoolBackoff` (pure, time injected) keeps a failed pool out for a while, and
  :meth:`Ec2.launch_with_fallback` tries the next pool (another type, then on-demand), logging each
  step. Throttling (``RequestLimitExceeded``) is account-wide, so it is not a reason to try another
  pool: it raises at once (botocore's adaptive mode already retried it with backoff).
- **Terminate** by ``TerminateInstances``; **describe** only this deployment's instances (tag filter,
  paginated; see ``tags.py``); ``instance_running`` waiter where a caller wants to block.

IAM actions: ``ec2:CreateLaunchTemplate``, ``ec2:DescribeLaunchTemplates``, ``ec2:RunInstances``,
``ec2:CreateTags`` (tags at launch), ``ec2:TerminateInstances``, ``ec2:DescribeInstances``,
``iam:PassRole`` (only with an instance profile). Scope ``RunInstances``/``TerminateInstances`` with
the condition ``aws:ResourceTag/mark:deployment`` (and ``aws:RequestTag/mark:deployment`` at launch).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from orchestrator.cloud.aws.tags import (
    DEPLOYMENT_TAG,
    TOKEN_TAG,
    Pool,
    deployment_tags,
    describe_instances,
    fleet_from_tags,
    instance_tags,
    tag_specifications,
)
from orchestrator.cloud.base import CapacityError
from orchestrator.types import Market

log = logging.getLogger(__name__)

# Error codes that mean "this pool cannot take more now"
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",  # AWS has no capacity of this type in the AZ right now
        "InstanceLimitExceeded",  # the account's quota (vCPU limit) for the type's family
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",  # the account's spot quota
        "SpotMaxPriceTooLow",  # the spot price is above our max price
        "InsufficientCapacity",
        "Unsupported",  # the type is not offered in this AZ/region
    }
)
THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
IMDS_V2 = {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1}
CLIENT_TOKEN_MAX = 64  # ASCII characters (RunInstances API reference)


class PoolUnavailable(CapacityError):
    """A pool (type × market) refused a launch: capacity, quota, price or throttling.

    ``code`` is EC2's error code; ``pool`` the pool; ``throttled`` is True for request-rate limits
    (account-wide: another pool would fail too)."""

    def __init__(self, pool: Pool, code: str, message: str) -> None:
        super().__init__(f"pool {pool}: {code}: {message}")
        self.pool = pool
        self.code = code
        self.throttled = code in THROTTLING_CODES


class NoCapacity(CapacityError):
    """Every pool tried (or in backoff) refused: ``failures`` maps each pool to why."""

    def __init__(self, failures: dict[Pool, str]) -> None:
        super().__init__("no pool could launch: " + "; ".join(f"{p}: {why}" for p, why in failures.items()))
        self.failures = failures


@dataclass
class PoolBackoff:
    """Per-pool exponential backoff after capacity errors; pure bookkeeping, the caller passes ``now``.

    After the k-th failure in a row a pool is kept out for ``min(base_s * 2**(k-1), max_s)`` seconds;
    a success resets it. Seconds are on whatever clock the caller uses (the backend's ``now()``).
    Insufficient capacity usually clears within minutes, so 60 s doubling to 15 min by default.
    """

    base_s: float = 60.0
    max_s: float = 900.0
    _failures: dict[Pool, int] = field(default_factory=dict)
    _until: dict[Pool, float] = field(default_factory=dict)

    def record_failure(self, pool: Pool, now: float) -> float:
        """Count a failure of ``pool`` at ``now``; returns until when (seconds) the pool stays out."""
        k = self._failures.get(pool, 0) + 1
        self._failures[pool] = k
        self._until[pool] = now + min(self.base_s * 2 ** (k - 1), self.max_s)
        return self._until[pool]

    def record_success(self, pool: Pool) -> None:
        self._failures.pop(pool, None)
        self._until.pop(pool, None)

    def blocked_until(self, pool: Pool) -> float | None:
        """When the pool's backoff ends (None: never failed, or reset)."""
        return self._until.get(pool)

    def available(self, pool: Pool, now: float) -> bool:
        until = self._until.get(pool)
        return until is None or now >= until


@dataclass(frozen=True)
class LaunchSettings:
    """What every instance of the deployment is launched with.

    ``image_id``: the worker AMI; ``subnet_ids``: the first is used (order = preference);
    ``iam_instance_profile_arn``: the workers' role (needs ``iam:PassRole``); ``user_data``: the boot
    script (plain text; boto3 base64-encodes it for templates here)."""

    image_id: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile_arn: str | None = None
    user_data: str | None = None


def new_client_token() -> str:
    """A fresh idempotency token (32 hex characters, well under EC2's 64)."""
    return uuid.uuid4().hex


def pool_token(token: str, pool: Pool) -> str:
    """The ``ClientToken`` for ``token``'s launch in ``pool``: one token per (launch, pool), because
    EC2 rejects a token reused with other parameters (``IdempotentParameterMismatch``)."""
    digest = hashlib.sha256(pool.tag.encode()).hexdigest()[:8]
    return f"{token[: CLIENT_TOKEN_MAX - 9]}-{digest}"


def _error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class Ec2:
    """EC2 calls for deployment ``deployment`` through ``client`` (a boto3 EC2 client).

    ``clock`` gives seconds (for the backoff); the default is the wall clock."""

    def __init__(
        self,
        client: Any,
        deployment: str,
        settings: LaunchSettings,
        *,
        backoff: PoolBackoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.settings = settings
        self.backoff = backoff or PoolBackoff()
        self.clock = clock
        self._templates: dict[str, str] = {}

    # -- launch templates --------------------------------------------------------------------------

    def template_name(self, instance_type: str) -> str:
        return f"mark-{self.deployment}-{instance_type}"

    def template_data(self, instance_type: str) -> dict[str, Any]:
        """The ``LaunchTemplateData`` for ``instance_type`` (IMDSv2 required, tags on instance and volumes)."""
        s = self.settings
        data: dict[str, Any] = {
            "ImageId": s.image_id,
            "InstanceType": instance_type,
            "MetadataOptions": dict(IMDS_V2),
            "TagSpecifications": tag_specifications(("instance", "volume"), deployment_tags(self.deployment)),
        }
        if s.security_group_ids:
            data["SecurityGroupIds"] = list(s.security_group_ids)
        if s.iam_instance_profile_arn:
            data["IamInstanceProfile"] = {"Arn": s.iam_instance_profile_arn}
        if s.user_data:
            data["UserData"] = base64.b64encode(s.user_data.encode()).decode()
        return data

    def ensure_launch_template(self, instance_type: str) -> str:
        """The name of ``instance_type``'s launch template, created when missing (idempotent).

        Raises:
            botocore.exceptions.ClientError: EC2 refused (after botocore's retries).
        """
        name = self.template_name(instance_type)
        if name in self._templates:
            return name
        try:
            self.client.describe_launch_templates(LaunchTemplateNames=[name])
        except ClientError as e:
            if "NotFound" not in _error_code(e):
                raise
            try:
                self.client.create_launch_template(
                    LaunchTemplateName=name,
                    LaunchTemplateData=self.template_data(instance_type),
                    ClientToken=pool_token(f"lt-{self.deployment}", Pool(instance_type, Market.ON_DEMAND)),
                    TagSpecifications=tag_specifications(("launch-template",), deployment_tags(self.deployment)),
                )
                log.info("created launch template %s (IMDSv2 required)", name)
            except ClientError as e2:  # another controller created it meanwhile
                if "AlreadyExists" not in _error_code(e2):
                    raise
        self._templates[name] = name
        return name

    # -- launch ------------------------------------------------------------------------------------

    def find_by_token(self, token: str) -> list[dict[str, Any]]:
        """Instances of this deployment launched with ``token`` (any state but terminated)."""
        filters = [
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [self.deployment]},
            {"Name": f"tag:{TOKEN_TAG}", "Values": [token]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down", "stopping", "stopped"]},
        ]
        return sorted(describe_instances(self.client, filters), key=lambda i: i["InstanceId"])

    def launch(self, pool: Pool, count: int, token: str) -> list[dict[str, Any]]:
        """Launch ``count`` instances in ``pool`` (all of them, or an error), idempotently for
        ``token``: instances an earlier attempt with this token launched are returned instead.

        Returns the described instances (``RunInstances`` shapes).

        Raises:
            ValueError: ``count`` < 1 or ``token`` longer than 64 characters.
            PoolUnavailable: capacity, quota, spot price, unsupported type, or throttling.
            botocore.exceptions.ClientError: any other refusal.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if not token or len(token) > CLIENT_TOKEN_MAX:
            raise ValueError(f"client token must be 1..{CLIENT_TOKEN_MAX} characters")
        existing = self.find_by_token(token)
        if existing:
            log.info("launch %s already made %d instance(s) in %s: adopting them", token, len(existing), pool)
            return existing
        template = self.ensure_launch_template(pool.instance_type)
        kwargs: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateName": template, "Version": "$Latest"},
            "InstanceType": pool.instance_type,
            # All or nothing: a pool that cannot hold ``count`` raises InsufficientInstanceCapacity and
            # the whole launch moves to the next pool, so the plan's count is met in one place.
            "MinCount": count,
            "MaxCount": count,
            "ClientToken": pool_token(token, pool),
            "MetadataOptions": dict(IMDS_V2),
            "TagSpecifications": tag_specifications(
                ("instance", "volume"), instance_tags(self.deployment, pool, token)
            ),
        }
        if self.settings.subnet_ids:
            kwargs["SubnetId"] = self.settings.subnet_ids[0]
        if pool.market is Market.SPOT:
            # No MaxPrice: pay the current spot price, capped at on-demand (AWS's recommendation,
            # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-instances-request.html).
            kwargs["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        try:
            out = self.client.run_instances(**kwargs)
        except ClientError as e:
            code = _error_code(e)
            if code in CAPACITY_CODES or code in THROTTLING_CODES:
                raise PoolUnavailable(pool, code, str(e.response.get("Error", {}).get("Message", ""))) from e
            raise
        instances: list[dict[str, Any]] = out.get("Instances", [])
        log.info("launched %s in %s (token %s)", [i["InstanceId"] for i in instances], pool, token)
        return instances

    def launch_with_fallback(self, pools: Sequence[Pool], count: int, token: str) -> tuple[Pool, list[dict[str, Any]]]:
        """Launch in the first pool of ``pools`` that is out of backoff and has capacity.

        A pool that refuses is put in backoff (logged with how long) and the next one is tried; the
        same ``token`` (per pool, see :func:`pool_token`) keeps every attempt idempotent.

        Raises:
            PoolUnavailable: throttling (no point trying another pool).
            NoCapacity: every pool refused or is in backoff.
            botocore.exceptions.ClientError: any other refusal.
        """
        failures: dict[Pool, str] = {}
        for i, pool in enumerate(pools):
            now = self.clock()
            if not self.backoff.available(pool, now):
                until = self.backoff.blocked_until(pool) or now
                failures[pool] = f"in backoff for {until - now:.0f} s more"
                log.info("pool %s skipped: in backoff for %.0f s more", pool, until - now)
                continue
            try:
                instances = self.launch(pool, count, token)
            except PoolUnavailable as e:
                if e.throttled:
                    raise
                until = self.backoff.record_failure(pool, now)
                failures[pool] = e.code
                nxt = next((str(p) for p in pools[i + 1 :]), None)
                log.warning(
                    "pool %s unavailable (%s): kept out for %.0f s; %s",
                    pool,
                    e.code,
                    until - now,
                    f"falling back to {nxt}" if nxt else "no pool left",
                )
                continue
            self.backoff.record_success(pool)
            if i > 0:
                log.warning("launched in fallback pool %s instead of %s", pool, pools[0])
            return pool, instances
        raise NoCapacity(failures)

    # -- terminate, describe, wait -----------------------------------------------------------------

    def terminate(self, instance_ids: Iterable[str]) -> list[str]:
        """Terminate ``instance_ids`` (only this deployment's: others are refused). Returns the ids
        EC2 acknowledged; unknown ids are skipped (already gone).

        Raises:
            ValueError: an id belongs to another deployment (or carries no deployment tag).
            botocore.exceptions.ClientError: EC2 refused (after botocore's retries).
        """
        ids = sorted(set(instance_ids))
        if not ids:
            return []
        ours = {i["InstanceId"] for i in fleet_from_tags(self.client, self.deployment, include_terminated=True)}
        foreign = [i for i in ids if i not in ours]
        if foreign:
            raise ValueError(f"not instances of deployment {self.deployment!r}: {', '.join(foreign)}")
        done: list[str] = []
        for start in range(0, len(ids), 1000):
            out = self.client.terminate_instances(InstanceIds=ids[start : start + 1000])
            done += [x["InstanceId"] for x in out.get("TerminatingInstances", [])]
        log.info("terminated %s", done)
        return done

    def describe(self, include_terminated: bool = True) -> list[dict[str, Any]]:
        """This deployment's instances, paginated (see :func:`tags.fleet_from_tags`)."""
        return fleet_from_tags(self.client, self.deployment, include_terminated=include_terminated)

    def wait_running(self, instance_ids: list[str], delay_s: int = 15, max_attempts: int = 40) -> None:
        """Block until every instance is ``running`` (the ``instance_running`` waiter: polls every
        ``delay_s`` seconds, at most ``max_attempts`` times; boto3's default is 15 s × 40).

        Raises:
            botocore.exceptions.WaiterError: an instance terminated or the attempts ran out.
        """
        if instance_ids:
            self.client.get_waiter("instance_running").wait(
                InstanceIds=instance_ids, WaiterConfig={"Delay": delay_s, "MaxAttempts": max_attempts}
            )
