"""``SimCloud``: the in-memory :class:`~orchestrator.cloud.base.Cloud` on a virtual clock (DESIGN.md §6).

The simulator's cloud, and the fake cloud of the tests: no process, no network, no wall time. It
models what the controller must cope with on EC2:

- **boot lag**: an instance launched at t is ``pending`` until t + the catalog's ``boot_seconds`` of
  its type, then ``running`` (serving);
- **billing** through the one :class:`~orchestrator.economics.ledger.CostLedger`: from launch (EC2
  bills from the launch, boot included) to termination, with EC2's 60 s minimum per launch; at the
  catalog's EC2 price, or (``price_source="sagemaker"``) its ``sagemaker_realtime_usd_per_hour`` for
  the SageMaker baseline;
- **idempotent launches**: a launch with a token already used returns the instances of that launch
  (EC2's ClientToken), so a controller step run twice launches once;
- **capacity**: at most ``max_instances`` alive (and ``max_per_pool`` per ``"type/market"``), past
  which ``launch`` raises :class:`~orchestrator.cloud.base.CapacityError`, as EC2's
  InsufficientInstanceCapacity or a quota would;
- **spot interruptions**: a notice, then termination ``SPOT_NOTICE_S`` = 120 s later (EC2's
  two-minute warning: "Spot Instance interruption notices", Amazon EC2 User Guide), drawn from a
  per-pool hazard (interruptions per instance-hour, exponential, seeded) or scripted
  ``[(at_s, instance id or instance type)]`` for tests. A notice on an instance makes it ``draining``
  (no new work); an on-demand instance never gets one.

The clock only moves through :meth:`SimCloud.advance`, which applies every due transition in time
order and returns them as :class:`CloudEvent` values, so the serving model reacts at the exact
virtual time (the simulator merges :meth:`SimCloud.next_event_s` into its own event queue). The
``Cloud`` interface's async verbs wrap the synchronous ones (``launch_now``, ``terminate_now``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from orchestrator.clock import ManualClock
from orchestrator.cloud.base import CapacityError, Cloud, Instance, InstanceNotFound, InterruptionNotice
from orchestrator.economics.catalog import Catalog
from orchestrator.economics.ledger import CostLedger
from orchestrator.types import InstanceState, Market

SPOT_NOTICE_S = 120.0  # EC2 Spot: the interruption notice comes two minutes before the instance is reclaimed

PriceSource = Literal["ec2", "sagemaker"]
EventKind = Literal["ready", "notice", "reclaimed"]


@dataclass(frozen=True)
class CloudEvent:
    """A transition the cloud made at ``at_s``: ``ready`` (pending -> running), ``notice`` (spot
    interruption notice: draining, reclaimed at ``at_s`` + 120 s) or ``reclaimed`` (terminated by EC2)."""

    at_s: float
    kind: EventKind
    instance_id: str


@dataclass
class _Record:
    instance: Instance
    token: str
    usd_per_hour: float
    draining: bool = False


def pool_key(instance_type: str, market: str) -> str:
    """``"type/market"``, the key of capacity limits and of per-pool figures in results."""
    return f"{instance_type}/{Market(market).value}"


class SimCloud(Cloud):
    """In-memory instances on a :class:`ManualClock`; every launch billed by ``ledger``.

    Args:
        catalog: prices and boot times.
        clock: the virtual clock (default: a new one at 0); only :meth:`advance` moves it.
        ledger: the cost ledger to bill (default: a new one on ``catalog``).
        price_source: ``"ec2"`` (on-demand or spot price) or ``"sagemaker"`` (the type's
            ``sagemaker_realtime_usd_per_hour``, on-demand only).
        max_instances: alive instances (pending, running, draining) at most; None: no limit.
        max_per_pool: alive instances at most per ``"type/market"``.
        spot_hazard_per_hour: expected spot interruptions per instance-hour, by instance type (the
            key ``"*"`` for every type not named); each spot launch draws its notice time from an
            exponential with that rate.
        spot_schedule: scripted notices ``(at_s, target)``: ``target`` an instance id (that instance)
            or an instance type (every alive spot instance of that type at ``at_s``).
        seed: of the hazard draws.
        boot_seconds: override of the catalog's boot time per type (e.g. 0 for an oracle).
        id_prefix: instance ids are ``{id_prefix}{n:08d}`` (zero-padded: string order is launch order).
    """

    def __init__(
        self,
        catalog: Catalog,
        clock: ManualClock | None = None,
        ledger: CostLedger | None = None,
        *,
        price_source: PriceSource = "ec2",
        max_instances: int | None = None,
        max_per_pool: Mapping[str, int] | None = None,
        spot_hazard_per_hour: Mapping[str, float] | None = None,
        spot_schedule: Sequence[tuple[float, str]] = (),
        seed: int = 0,
        boot_seconds: Mapping[str, float] | None = None,
        id_prefix: str = "sim-",
    ) -> None:
        if price_source not in ("ec2", "sagemaker"):
            raise ValueError(f"price_source must be 'ec2' or 'sagemaker', got {price_source!r}")
        for key, rate in (spot_hazard_per_hour or {}).items():
            if not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"spot_hazard_per_hour[{key!r}] must be a finite number >= 0, got {rate!r}")
        self.catalog = catalog
        self.clock = clock if clock is not None else ManualClock()
        self.ledger = ledger if ledger is not None else CostLedger(catalog)
        self.price_source: PriceSource = price_source
        self.max_instances = max_instances
        self.max_per_pool = dict(max_per_pool or {})
        self.spot_hazard_per_hour = dict(spot_hazard_per_hour or {})
        self.boot_overrides = dict(boot_seconds or {})
        self.id_prefix = id_prefix
        self._rng = np.random.default_rng(seed)
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._records: dict[str, _Record] = {}
        self._by_token: dict[str, list[str]] = {}
        self._notices: dict[str, InterruptionNotice] = {}
        self._timeline: list[tuple[float, int, str, str]] = []  # (at, seq, kind, instance id or pool)
        self.notices_issued = 0
        self.launches = 0
        for at, target in spot_schedule:
            if not math.isfinite(at):
                raise ValueError(f"spot_schedule: time must be finite, got {at!r}")
            heapq.heappush(self._timeline, (float(at), next(self._seq), "scripted", target))

    # --- the Cloud interface ---------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    async def launch(self, instance_type: str, market: Market, count: int = 1) -> list[Instance]:
        return self.launch_now(instance_type, market, count)

    async def terminate(self, instance_ids: list[str]) -> None:
        self.terminate_now(instance_ids)

    def instances(self) -> list[Instance]:
        """Every instance launched, terminated ones included, in launch order."""
        return [r.instance for r in self._records.values()]

    def interruption_notices(self) -> list[InterruptionNotice]:
        """Notices of instances not yet reclaimed (as instance metadata shows them until the end)."""
        return list(self._notices.values())

    async def close(self) -> None:
        """Terminate (and stop billing) every instance still alive."""
        self.terminate_now([r.instance.id for r in self._records.values() if _alive(r.instance)])

    # --- synchronous verbs (the simulator's) -------------------------------------------------

    def usd_per_hour(self, instance_type: str, market: str) -> float:
        """What one instance of this type bills per hour under this cloud's price source."""
        if self.price_source == "sagemaker":
            return self.catalog.instance(instance_type).sagemaker_realtime_usd_per_hour.value
        return self.catalog.price_usd_per_hour(instance_type, market)

    def boot_seconds(self, instance_type: str) -> float:
        if instance_type in self.boot_overrides:
            return float(self.boot_overrides[instance_type])
        return self.catalog.boot_seconds(instance_type)

    def launch_now(
        self,
        instance_type: str,
        market: Market | str,
        count: int = 1,
        token: str | None = None,
        *,
        booted: bool = False,
    ) -> list[Instance]:
        """Launch ``count`` instances now (pending until boot ends; ``booted``: running at once).

        Raises:
            ValueError: count < 1, unknown market; UnknownInstanceTypeError: a type not in the catalog;
            CapacityError: past ``max_instances`` or ``max_per_pool`` (nothing launched).
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a whole number >= 1, got {count!r}")
        mkt = Market(market)
        if self.price_source == "sagemaker" and mkt != Market.ON_DEMAND:
            raise ValueError("SageMaker real-time endpoints are on-demand only: launch with market 'on-demand'")
        if token:
            done = self._by_token.get(token)
            if done is not None:
                return [self._records[i].instance for i in done]
        price = self.usd_per_hour(instance_type, mkt)  # validates the type
        boot = 0.0 if booted else self.boot_seconds(instance_type)
        alive = [r.instance for r in self._records.values() if _alive(r.instance)]
        if self.max_instances is not None and len(alive) + count > self.max_instances:
            raise CapacityError(
                f"capacity: at most {self.max_instances} instances; {len(alive)} alive, {count} more asked"
            )
        key = pool_key(instance_type, mkt)
        if key in self.max_per_pool:
            in_pool = sum(1 for i in alive if pool_key(i.instance_type, i.market) == key)
            if in_pool + count > self.max_per_pool[key]:
                raise CapacityError(
                    f"capacity: pool {key} holds at most {self.max_per_pool[key]}; {in_pool} alive, {count} more asked"
                )
        now = self.now()
        out: list[Instance] = []
        for _ in range(count):
            iid = f"{self.id_prefix}{next(self._ids):08d}"
            state = InstanceState.RUNNING if boot <= 0 else InstanceState.PENDING
            inst = Instance(iid, instance_type, mkt, state, launched_at=now, ready_at=now + boot)
            self._records[iid] = _Record(inst, token or "", price)
            self.ledger.instance_started(iid, instance_type, mkt.value, now, usd_per_hour=price)
            if boot > 0:
                self._push(now + boot, "ready", iid)
            if mkt == Market.SPOT:
                rate = self.spot_hazard_per_hour.get(instance_type, self.spot_hazard_per_hour.get("*", 0.0))
                if rate > 0:
                    self._push(now + float(self._rng.exponential(3600.0 / rate)), "hazard", iid)
            out.append(inst)
        self.launches += count
        if token:
            self._by_token[token] = [i.id for i in out]
        return out

    def drain(self, instance_id: str) -> Instance:
        """Mark an instance draining (no new work): the controller's ``Drain``.

        Raises:
            InstanceNotFound: unknown or already terminated.
        """
        rec = self._live(instance_id)
        rec.draining = True
        rec.instance = replace(rec.instance, state=InstanceState.DRAINING)
        return rec.instance

    def terminate_now(self, instance_ids: Iterable[str]) -> None:
        """Terminate now; billing stops (60 s minimum per launch). Already terminated ids are skipped.

        Raises:
            InstanceNotFound: an id this cloud never launched (nothing is terminated then).
        """
        ids = list(instance_ids)
        unknown = [i for i in ids if i not in self._records]
        if unknown:
            raise InstanceNotFound(f"unknown instance {unknown[0]!r}")
        for iid in ids:
            self._stop(iid)

    def is_draining(self, instance_id: str) -> bool:
        rec = self._records.get(instance_id)
        return rec is not None and rec.draining

    def token_of(self, instance_id: str) -> str:
        return self._records[instance_id].token

    def next_event_s(self) -> float:
        """Virtual time of the next scheduled transition (inf: none)."""
        return self._timeline[0][0] if self._timeline else math.inf

    def advance(self, to_s: float) -> list[CloudEvent]:
        """Move the clock to ``to_s``, applying every transition due by then, in time order.

        Raises:
            ValueError: ``to_s`` is before now.
        """
        now = self.now()
        if to_s < now:
            raise ValueError(f"the clock only moves forward: now {now:g} s, asked {to_s:g} s")
        events: list[CloudEvent] = []
        while self._timeline and self._timeline[0][0] <= to_s:
            at, _, kind, target = heapq.heappop(self._timeline)
            self.clock.advance(max(0.0, at - self.clock.now()))
            if kind == "ready":
                rec = self._records[target]
                if rec.instance.state == InstanceState.PENDING:
                    rec.instance = replace(rec.instance, state=InstanceState.RUNNING)
                    events.append(CloudEvent(at, "ready", target))
            elif kind in ("hazard", "scripted"):
                for iid in self._notice_targets(target):
                    events.append(self._notify(iid, at))
            elif kind == "reclaim":
                rec = self._records[target]
                if _alive(rec.instance):
                    self._stop(target)
                    events.append(CloudEvent(at, "reclaimed", target))
        self.clock.advance(to_s - self.clock.now())
        return events

    def instance(self, instance_id: str) -> Instance:
        try:
            return self._records[instance_id].instance
        except KeyError:
            raise InstanceNotFound(f"unknown instance {instance_id!r}") from None

    def billed_hours(self, until_s: float) -> dict[str, float]:
        """Billed hours per ``"type/market"`` up to ``until_s`` (running ones as if stopped then), 60 s
        minimum per launch: the ledger's rule (``CostLedger.billed_seconds``)."""
        out: dict[str, float] = {}
        for rec in self._records.values():
            inst = rec.instance
            end = inst.terminated_at if inst.terminated_at is not None else until_s
            key = pool_key(inst.instance_type, inst.market)
            out[key] = out.get(key, 0.0) + self.ledger.billed_seconds(end - inst.launched_at) / 3600.0
        return out

    # --- internals ---------------------------------------------------------------------------

    def _push(self, at: float, kind: str, target: str) -> None:
        heapq.heappush(self._timeline, (at, next(self._seq), kind, target))

    def _live(self, instance_id: str) -> _Record:
        rec = self._records.get(instance_id)
        if rec is None or not _alive(rec.instance):
            raise InstanceNotFound(f"no live instance {instance_id!r}")
        return rec

    def _notice_targets(self, target: str) -> list[str]:
        if target in self._records:
            rec = self._records[target]
            ok = _alive(rec.instance) and rec.instance.market == Market.SPOT and target not in self._notices
            return [target] if ok else []
        return [
            r.instance.id
            for r in self._records.values()
            if r.instance.instance_type == target
            and r.instance.market == Market.SPOT
            and _alive(r.instance)
            and r.instance.id not in self._notices
        ]

    def _notify(self, iid: str, at: float) -> CloudEvent:
        rec = self._records[iid]
        notice = InterruptionNotice(iid, at, at + SPOT_NOTICE_S)
        self._notices[iid] = notice
        rec.draining = True
        rec.instance = replace(rec.instance, state=InstanceState.DRAINING, interruption_at=notice.terminate_at)
        self._push(notice.terminate_at, "reclaim", iid)
        self.notices_issued += 1
        return CloudEvent(at, "notice", iid)

    def _stop(self, iid: str) -> None:
        rec = self._records[iid]
        if not _alive(rec.instance):
            return
        now = self.now()
        self.ledger.instance_stopped(iid, now)
        rec.instance = replace(rec.instance, state=InstanceState.TERMINATED, terminated_at=now, endpoint=None)
        self._notices.pop(iid, None)


def _alive(inst: Instance) -> bool:
    return inst.state != InstanceState.TERMINATED
