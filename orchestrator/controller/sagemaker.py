"""The SageMaker baseline of ``mark simulate``: a real-time endpoint scaled by Application Auto Scaling
target tracking on ``SageMakerVariantInvocationsPerInstance``, the way a user would set it up.

- **Instance type**: the one a user would pick, the cheapest per request at SLO at SageMaker's ml.*
  prices: min over types of ``sagemaker_realtime_usd_per_hour / capacity_rps`` (catalog prices;
  capacity at SLO from the latency profiles and the batching model, the same figures as
  ``mark plan capacity``), :func:`pick_instance_type`. On-demand only (real-time endpoints run no
  spot instances), one production variant of one type.
- **Target value**: ``SageMakerVariantInvocationsPerInstance = (MAX_RPS * SAFETY_FACTOR) * 60``, "SageMaker
  AI recommends that you start testing with a SAFETY_FACTOR of 0.5" (SageMaker Developer Guide, Load
  testing your auto scaling configuration,
  https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-loadtest.html). MAX_RPS is what a
  load test finds: "When the model latency increases or the proportion of successful transactions
  decreases, this is the peak RPS"; we take the capacity at SLO (the highest rate at which the
  SLmin-quantile of latency stays within RTmax), the load a careful load test would stop at. So the
  target is capacity_rps x 60 x 0.5 invocations per instance per minute.
- **Scaling rule**: orchestrator/policy/target_tracking.py (alarms of 3 and 15 one-minute datapoints,
  proportional adjustment, 300 s cooldowns, scale-in below 0.9 x target; sources there).
- **Start-up time**: ``startup_s = 300`` s from the launch until the new instance serves. AWS gives no
  figure for adding an instance to a running endpoint; it says only "Be aware that the provisioning
  process takes several minutes" (SageMaker Developer Guide, Scale an endpoint to zero instances,
  https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-zero-instances.html), and a
  new instance must pull the serving image, download the model from S3 and pass the container's
  ``/ping`` health check before it takes traffic. We take 5 minutes, the low end of "several" and
  equal to the default scale-out cooldown (so that AWS's cooldown covers the start-up, the case its
  rule is written for); the EC2 workers of this project boot in 60 s (catalog ``boot_seconds``).
  The simulator reads it from :attr:`SageMakerController.boot_seconds`.
- **Batching**: ``sagemaker`` serves one request at a time (batch size 1, as a SageMaker real-time
  container does unless its model server is configured to batch; capacity at SLO computed for b = 1);
  ``sagemaker-batched`` lets the serving container batch with the batching plan's (b, W) for that
  type, the best a user could configure. Each sends ``SetBatching`` for its type at the first step.
- **Prices**: the simulator bills these instances at ``sagemaker_realtime_usd_per_hour``
  (:attr:`SageMakerController.price_source` = ``"sagemaker"``).

The step is pure: the state is a frozen value, actions are data, and the same state and observation
give the same tick (launch tokens are ``<name>-<tick>``, so a repeated step launches nothing twice).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.controller.actions import Action, Drain, Launch, SetBatching, Terminate
from orchestrator.controller.state import FleetMember, Observation, Tick
from orchestrator.economics.capacity import request_cpu_ms, with_request_cpu
from orchestrator.economics.catalog import Catalog
from orchestrator.economics.latency_profiles import UnsupportedOnTypeError, profile_for
from orchestrator.policy.batching import plan_batching
from orchestrator.policy.target_tracking import (
    TargetTrackingPolicy,
    TrackingState,
    evaluate,
    initial_state,
)
from orchestrator.types import InstanceState, Market, Slo

SAFETY_FACTOR = 0.5  # SageMaker Developer Guide, "Load testing your auto scaling configuration"
STARTUP_S = 300.0  # "takes several minutes" (SageMaker Developer Guide); our choice, see the module docstring


@dataclass(frozen=True)
class SageMakerSizing:
    """One instance type and how one instance of it serves: batch size and timeout, capacity at SLO
    (req/s, host CPU per request included) and the SageMaker price (USD/hour)."""

    instance_type: str
    capacity_rps: float
    batch_size: int
    batch_timeout_ms: float
    usd_per_hour: float

    @property
    def usd_per_million(self) -> float:
        """SageMaker price per million requests at capacity."""
        return self.usd_per_hour / 3600.0 / self.capacity_rps * 1e6


def sizing_for(
    model: str, catalog: Catalog, slo: Slo, instance_type: str, *, batching: bool, profiles_dir: Path | None = None
) -> SageMakerSizing | None:
    """Capacity at SLO of ``model`` on one type, without (b = 1) or with the batching plan's (b, W);
    None where the model cannot meet the SLO on that type (or is not served on it). ``profiles_dir``:
    latency profiles other than the committed ones."""
    try:
        prof = profile_for(model, instance_type, catalog, profiles_dir)
    except UnsupportedOnTypeError:
        return None
    plan = plan_batching(
        prof.service, rt_max_ms=slo.rt_max_ms, sl_min=slo.sl_min, usd_per_hour=1.0, epsilon_ms=slo.epsilon_ms
    )
    if plan.best is None:
        return None
    cand = plan.best if batching else next((c for c in plan.candidates if c.batch_size == 1), None)
    if cand is None or cand.capacity_rps <= 0:
        return None
    gpu = catalog.instance(instance_type).gpu is not None
    cap = with_request_cpu(cand.capacity_rps, request_cpu_ms(model), prof.slots, gpu)
    return SageMakerSizing(
        instance_type, cap, cand.batch_size, cand.batch_timeout_ms, catalog.sagemaker_usd_per_hour(instance_type)
    )


def cheapest_sizing(
    model: str,
    catalog: Catalog,
    slo: Slo,
    types: Iterable[str] | None = None,
    *,
    batching: bool = False,
    profiles_dir: Path | None = None,
) -> SageMakerSizing:
    """The type with the lowest SageMaker price per request at SLO (ties: the name), with its sizing."""
    names = list(types) if types is not None else catalog.known_types()
    if not names:
        raise ValueError("no instance types to choose from")
    sizings = [
        s
        for s in (sizing_for(model, catalog, slo, t, batching=batching, profiles_dir=profiles_dir) for t in names)
        if s is not None
    ]
    if not sizings:
        raise ValueError(
            f"{model} meets RTmax {slo.rt_max_ms:g} ms at SLmin {slo.sl_min:g} on none of: {', '.join(names)}"
        )
    return min(sizings, key=lambda s: (s.usd_per_million, s.instance_type))


def pick_instance_type(
    model: str, catalog: Catalog, slo: Slo, types: Iterable[str] | None = None, *, batching: bool = False
) -> tuple[str, float]:
    """The type a SageMaker user would pick: cheapest per request at SLO at ml.* prices, and its
    capacity at SLO (req/s per instance), for b = 1 or (``batching``) the batching plan's (b, W)."""
    s = cheapest_sizing(model, catalog, slo, types, batching=batching)
    return s.instance_type, s.capacity_rps


@dataclass(frozen=True)
class SageMakerState:
    """What the controller carries between steps: the tick number, the target tracking state, and
    whether the batching setting has been sent."""

    tick: int
    tracking: TrackingState
    batching_sent: bool = False


class SageMakerController:
    """Application Auto Scaling target tracking on a SageMaker real-time endpoint (see the module
    docstring). ``name`` is ``sagemaker`` or (``batching``) ``sagemaker-batched``."""

    interval_s: float = 60.0
    future_s: int = 0
    price_source: str = "sagemaker"
    uses_lambda: bool = False  # a SageMaker endpoint has no burst function: overflow queues or gets 503

    def __init__(
        self,
        sizing: SageMakerSizing,
        *,
        batching: bool = False,
        initial: int = 1,
        safety_factor: float = SAFETY_FACTOR,
        min_capacity: int = 1,
        max_capacity: int = 1000,
        scale_out_cooldown_s: float = 300.0,
        scale_in_cooldown_s: float = 300.0,
        startup_s: float = STARTUP_S,
    ) -> None:
        if not batching and (sizing.batch_size != 1 or sizing.batch_timeout_ms != 0):
            raise ValueError(
                f"without batching the sizing must be for batch size 1 and no timeout, got b={sizing.batch_size}, "
                f"W={sizing.batch_timeout_ms:g} ms"
            )
        if not (math.isfinite(sizing.capacity_rps) and sizing.capacity_rps > 0):
            raise ValueError(f"capacity_rps must be positive, got {sizing.capacity_rps}")
        if not 0 < safety_factor <= 1:
            raise ValueError(f"safety_factor must lie in (0, 1], got {safety_factor}")
        if initial < 0:
            raise ValueError(f"initial must be >= 0, got {initial}")
        if not (math.isfinite(startup_s) and startup_s >= 0):
            raise ValueError(f"startup_s must be >= 0, got {startup_s}")
        self.name = "sagemaker-batched" if batching else "sagemaker"
        self.batching = batching
        self.sizing = sizing
        self.instance_type = sizing.instance_type
        self.initial = initial
        self.safety_factor = safety_factor
        self.startup_s = float(startup_s)
        self.policy = TargetTrackingPolicy(
            target_value=sizing.capacity_rps * 60.0 * safety_factor,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            scale_out_cooldown_s=scale_out_cooldown_s,
            scale_in_cooldown_s=scale_in_cooldown_s,
            period_s=self.interval_s,
        )

    @classmethod
    def for_model(
        cls,
        model: str,
        catalog: Catalog,
        slo: Slo,
        types: Iterable[str] | None = None,
        *,
        batching: bool = False,
        profiles_dir: Path | None = None,
        **kwargs: Any,
    ) -> SageMakerController:
        """The controller on the type a user would pick for ``model`` at ``slo`` (reads the profiles)."""
        sizing = cheapest_sizing(model, catalog, slo, types, batching=batching, profiles_dir=profiles_dir)
        return cls(sizing, batching=batching, **kwargs)

    @property
    def boot_seconds(self) -> Mapping[str, float]:
        """Start-up time per type for the simulator (``SimCloud(boot_seconds=...)``)."""
        return MappingProxyType({self.instance_type: self.startup_s})

    def initial_state(self) -> SageMakerState:
        return SageMakerState(tick=0, tracking=initial_state(self.policy, self.initial))

    def step(self, state: SageMakerState, observation: Observation) -> Tick:
        """One minute: the datapoint, the policy's decision, and the actions that reach its capacity."""
        obs = observation
        mine = [m for m in obs.fleet if m.instance_type == self.instance_type and m.state != InstanceState.TERMINATED]
        draining = [m for m in mine if _draining(m)]
        serving = [m for m in mine if m.state == InstanceState.RUNNING and not _draining(m)]
        pending = [m for m in mine if m.state == InstanceState.PENDING and not _draining(m)]
        invocations = _per_period(obs.arrivals, self.interval_s)

        decision = evaluate(
            self.policy, state.tracking, now_s=obs.now_s, invocations=invocations, in_service=len(serving)
        )
        desired = decision.desired

        actions: list[Action] = []
        if not state.batching_sent:
            actions.append(SetBatching(self.instance_type, self.sizing.batch_size, self.sizing.batch_timeout_ms))
        actions.extend(Terminate(m.instance_id) for m in draining if m.queued == 0)
        have = len(serving) + len(pending)
        if desired > have:
            actions.append(Launch(self.instance_type, Market.ON_DEMAND, desired - have, f"{self.name}-{state.tick}"))
        elif desired < have:
            actions.extend(_remove(serving, pending, have - desired))

        new_state = replace(state, tick=state.tick + 1, tracking=decision.state, batching_sent=True)
        plan: dict[str, Any] = {
            "policy": "target-tracking",
            "instance_type": self.instance_type,
            "batch_size": self.sizing.batch_size,
            "batch_timeout_ms": self.sizing.batch_timeout_ms,
            "metric": decision.metric,  # invocations per in-service instance, this minute
            "target": self.policy.target_value,
            "scale_in_threshold": self.policy.scale_in_threshold,
            "needed": decision.needed,
            "desired": desired,
            "in_service": len(serving),
            "pending": len(pending),
            "draining": len(draining),
            "alarm_high": decision.alarm_high,
            "alarm_low": decision.alarm_low,
            "activity": decision.activity,
            "reason": decision.reason,
        }
        return Tick(
            tick=state.tick,
            at_s=obs.now_s,
            actions=tuple(actions),
            state=new_state,
            plan=plan,
            expected_usd=desired * self.sizing.usd_per_hour * self.interval_s / 3600.0,
            observed={
                "arrivals": sum(obs.arrivals),
                "seconds": len(obs.arrivals),
                "invocations_per_minute": invocations,
                "requests": obs.requests,
                "within_slo": obs.within_slo,
                "failures": len(obs.failures),
            },
        )


def _draining(m: FleetMember) -> bool:
    return m.draining or m.state == InstanceState.DRAINING


def _per_period(arrivals: tuple[int, ...], period_s: float) -> float:
    """Invocations in the period: the arrivals of its seconds, scaled up when fewer seconds were seen
    (a first step taken before a whole period has passed)."""
    if not arrivals:
        return 0.0
    n = int(period_s)
    recent = arrivals[-n:]  # a first observation may carry the history before the window: the last period
    total = float(sum(recent))
    return total if len(recent) >= period_s else total * period_s / len(recent)


def _remove(serving: list[FleetMember], pending: list[FleetMember], n: int) -> list[Action]:
    """Scale-in by ``n``: instances still starting first (they hold no work: terminate), then the
    serving ones with the least work (drain; terminated at a later step once their queue is empty)."""
    out: list[Action] = []
    for m in sorted(pending, key=lambda m: (-m.launched_at_s, m.instance_id))[:n]:
        out.append(Terminate(m.instance_id))
    rest = n - len(out)
    if rest > 0:
        for m in sorted(serving, key=lambda m: (m.queued, -m.launched_at_s, m.instance_id))[:rest]:
            out.append(Drain(m.instance_id))
    return out
