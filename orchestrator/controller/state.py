"""What a control step sees, carries and records (DESIGN.md §3 "Controller").

- :class:`Observation`: what the mechanism observed since the last step (arrivals per second, the
  fleet, Lambda, SLO counts, failed actions), built by the simulator or the live loop;
- :class:`Tick`: what one step decided (forecast, plan summary, expected cost, actions) and the state
  it hands to the next step; ``Tick.record()`` is one JSON line of the decision log;
- :class:`Controller`: anything with ``initial_state()`` and a pure ``step(state, observation)``: our
  controller and every baseline compared in ``mark simulate`` (MArk, SageMaker target tracking, …).

Times are seconds on the run's clock (virtual in the simulator); ``epoch_s`` is the trace's calendar
time (POSIX seconds), which the forecaster's time-of-day features need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.controller.actions import Action, ActionFailure, action_json
from orchestrator.types import InstanceState, Market

if TYPE_CHECKING:
    from orchestrator.cloud.base import Instance, InterruptionNotice


@dataclass(frozen=True)
class FleetMember:
    """One instance as the cloud reports it. ``notice_at_s``: when a spot interruption notice arrived
    (None: none); ``draining``: no new work is sent to it."""

    instance_id: str
    instance_type: str
    market: Market
    state: InstanceState
    launched_at_s: float
    ready_at_s: float | None = None
    notice_at_s: float | None = None
    draining: bool = False
    queued: int = 0  # requests waiting or in service on it now
    token: str = ""  # the launch's idempotency token


def observed_fleet(
    instances: Iterable[Instance],
    notices: Iterable[InterruptionNotice],
    *,
    draining: Callable[[Instance], bool],
    queued: Callable[[str], int],
    token: Callable[[str], str],
) -> tuple[FleetMember, ...]:
    """The fleet as a step sees it, the one mapping the simulator and the live loop share: every instance
    not terminated, with its spot notice time (None: none), whether it is draining, the requests queued
    on it and its launch token (the callables answer per instance / instance id)."""
    notice_at = {n.instance_id: n.noticed_at for n in notices}
    return tuple(
        FleetMember(
            instance_id=i.id,
            instance_type=i.instance_type,
            market=i.market,
            state=i.state,
            launched_at_s=i.launched_at,
            ready_at_s=i.ready_at,
            notice_at_s=notice_at.get(i.id),
            draining=draining(i),
            queued=queued(i.id),
            token=token(i.id),
        )
        for i in instances
        if i.state != InstanceState.TERMINATED
    )


@dataclass(frozen=True)
class Observation:
    """Everything a step may use, observed at ``now_s``.

    ``arrivals``: requests arrived in each whole second since the previous step, oldest first (the
    last entry is the second that ended at ``now_s``). ``future_arrivals``: the true arrivals of the
    next seconds, given only to a controller that asks for them (the oracle); None otherwise.
    """

    now_s: float
    epoch_s: float
    arrivals: tuple[int, ...]
    fleet: tuple[FleetMember, ...]
    lambda_warm: int = 0
    lambda_busy: int = 0
    requests: int = 0  # answered since the previous step
    within_slo: int = 0  # of those, answered within RTmax
    failures: tuple[ActionFailure, ...] = ()
    future_arrivals: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Tick:
    """One step's decision. ``forecast``: ``[H][Q]`` req/s (peak per step, one column per quantile) or
    None for a controller that does not forecast; ``plan``: a JSON-able summary of the plan (planner,
    launches, terminations, Lambda share, …); ``expected_usd``: the plan's cost over its horizon."""

    tick: int
    at_s: float
    actions: tuple[Action, ...]
    state: Any = field(repr=False)
    forecast: tuple[tuple[float, ...], ...] | None = None
    quantiles: tuple[float, ...] = ()
    plan: dict[str, Any] = field(default_factory=dict)
    expected_usd: float = math.nan
    observed: dict[str, Any] = field(default_factory=dict)  # a summary of the observation

    def record(self) -> dict[str, Any]:
        """The decision-log line: everything but the state (which the next tick carries)."""
        return {
            "tick": self.tick,
            "at_s": self.at_s,
            "observed": self.observed,
            "forecast": [list(row) for row in self.forecast] if self.forecast is not None else None,
            "quantiles": list(self.quantiles),
            "plan": self.plan,
            "expected_usd": None if math.isnan(self.expected_usd) else self.expected_usd,
            "actions": [action_json(a) for a in self.actions],
        }


class Controller(Protocol):
    """A control policy: pure ``step``; ``interval_s`` between steps; ``future_s`` seconds of true
    future arrivals it needs in each observation (0 for every real controller; the oracle's horizon).

    What the policy is beyond its decisions, which the mechanism must honour for a fair comparison:
    ``uses_lambda`` (False: no function exists, overflow queues or gets 503), ``price_source`` (``ec2``
    or ``sagemaker``: the price its instances bill at), ``boot_seconds`` (per-type overrides of the
    catalog's boot time, e.g. the oracle's zero boot lag; empty: the catalog's)."""

    name: str
    interval_s: float
    future_s: int

    @property
    def uses_lambda(self) -> bool: ...

    @property
    def price_source(self) -> str: ...

    @property
    def boot_seconds(self) -> Mapping[str, float]: ...

    def initial_state(self) -> Any: ...

    def step(self, state: Any, observation: Observation) -> Tick: ...
