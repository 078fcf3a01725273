"""The deployment's tags on every AWS resource, and the fleet rebuilt from them (DESIGN.md §4).

A controller keeps no fleet of its own on disk: the tags are the record. Each instance carries

- ``mark:deployment=<name>``: which deployment owns it (every resource: instances, volumes,
  launch templates);
- ``mark:pool=<instance type>/<market>``: the pool it was launched in (``c5.large/spot``);
- ``mark:launch-token=<token>``: the ``ClientToken`` of the launch that made it, so a retried launch
  finds what an earlier attempt already created (see ``ec2.py``).

so that a restarted controller adopts what runs (:func:`fleet_from_tags`) and never leaks or
duplicates an instance. Tag keys and values: up to 128 / 256 characters, ``:`` allowed
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).

IAM actions: ``ec2:DescribeInstances`` (:func:`fleet_from_tags`); tags are applied at creation by
``ec2:RunInstances``/``ec2:CreateLaunchTemplate`` with ``TagSpecifications``, which needs
``ec2:CreateTags`` on those resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.types import Market

DEPLOYMENT_TAG = "mark:deployment"
POOL_TAG = "mark:pool"
TOKEN_TAG = "mark:launch-token"
# Every EC2 state except terminated: what a restarted controller must adopt (terminated instances stay
# visible in DescribeInstances for about an hour and cost nothing).
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")


@dataclass(frozen=True, order=True)
class Pool:
    """An EC2 capacity pool as the planner sees it: instance type × market."""

    instance_type: str
    market: Market

    @property
    def tag(self) -> str:
        """The ``mark:pool`` value, e.g. ``c5.large/spot``."""
        return f"{self.instance_type}/{self.market.value}"

    @classmethod
    def from_tag(cls, value: str) -> Pool:
        """The pool a ``mark:pool`` value names.

        Raises:
            ValueError: not ``TYPE/MARKET`` with MARKET ``on-demand`` or ``spot``.
        """
        instance_type, sep, market = value.partition("/")
        if not sep or not instance_type:
            raise ValueError(f"{POOL_TAG} {value!r}: expected TYPE/MARKET, e.g. c5.large/spot")
        return cls(instance_type, Market(market))

    def __str__(self) -> str:
        return self.tag


def deployment_tags(deployment: str, **extra: str) -> list[dict[str, str]]:
    """EC2 ``Tags`` for a resource of ``deployment`` (plus ``extra`` key/values, keys given as-is)."""
    return [{"Key": DEPLOYMENT_TAG, "Value": deployment}] + [{"Key": k, "Value": v} for k, v in extra.items()]


def instance_tags(deployment: str, pool: Pool, token: str) -> list[dict[str, str]]:
    """The tags every instance of ``deployment`` is launched with."""
    return deployment_tags(deployment, **{POOL_TAG: pool.tag, TOKEN_TAG: token})


def tag_specifications(resource_types: Iterable[str], tags: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``TagSpecifications`` applying ``tags`` at creation to each resource type ("instance", "volume", …)."""
    return [{"ResourceType": r, "Tags": list(tags)} for r in resource_types]


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    """A described resource's ``Tags`` list as a dict."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", []) or []}


def deployment_filter(deployment: str, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """``Filters`` for DescribeInstances: this deployment's instances (in ``states``, when given)."""
    filters: list[dict[str, Any]] = [{"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [deployment]}]
    if states is not None:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    return filters


def describe_instances(ec2: Any, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every instance matching ``filters``, across all pages (the ``describe_instances`` paginator).

    Raises:
        botocore.exceptions.ClientError: the call failed after botocore's retries.
    """
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters, PaginationConfig={"PageSize": 500}):
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])


def fleet_from_tags(ec2: Any, deployment: str, include_terminated: bool = False) -> list[dict[str, Any]]:
    """The described instances of ``deployment``: by default the live ones (not terminated), so that a
    restarted controller adopts exactly what runs and bills.

    Raises:
        botocore.exceptions.ClientError: the call failed after botocore's retries.
    """
    states = None if include_terminated else LIVE_STATES
    return sorted(describe_instances(ec2, deployment_filter(deployment, states)), key=lambda i: i["InstanceId"])
