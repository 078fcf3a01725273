"""The controller's pure step (orchestrator/controller/step.py, reconcile.py) on hand-made observations:
purity, idempotence, launching one boot ahead, drain before terminate, the 60 s minimum, spot notices,
failed launches, fleet bounds, the decision log and the per-second history.

``FakeCloud`` applies a tick's actions the simplest way (a launch appears at once as booting and serves
``boot_s`` later; a drain marks the instance draining; a terminate removes it), so several steps can
run in a row; ``Scripted`` is a forecaster whose forecast is a function of time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from orchestrator.controller.actions import ActionFailure, Drain, Launch, Prewarm, SetBatching, Terminate
from orchestrator.controller.forecasting import ForecastInputs, minutes_to_steps
from orchestrator.controller.state import FleetMember, Observation, Tick
from orchestrator.controller.step import HISTORY_SECONDS, ControllerState, StepContext, initial_state, step
from orchestrator.policy.planning import ON_DEMAND, SPOT, PoolOption, milp
from orchestrator.types import InstanceState, Market
from tests import fakes

EPOCH0 = 1_700_000_040.0  # a whole epoch minute: run second 0 of every test
QS = (0.5, 0.9, 0.99)
C5 = fakes.pool("c5.large", ON_DEMAND, 100.0, boot_seconds=120.0)
C5X = fakes.pool("c5.xlarge", ON_DEMAND, 200.0, boot_seconds=120.0)
C5_SPOT = fakes.pool("c5.large", SPOT, 100.0, boot_seconds=120.0)
C5X_SPOT = fakes.pool("c5.xlarge", SPOT, 200.0, boot_seconds=120.0)


@dataclass(frozen=True)
class Scripted:
    """Forecast: ``rate(t)`` req/s for the step starting at run second t, every quantile alike; no state."""

    rate: Callable[[float], float]
    name: str = "scripted"
    quantiles: tuple[float, ...] = QS

    def initial_state(self) -> None:
        return None

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        t0 = inputs.epoch_s - EPOCH0
        rows = [[self.rate(t0 + k * inputs.interval_s)] * len(QS) for k in range(inputs.steps)]
        return np.array(rows, dtype=float), state


def flat(rps: float) -> Scripted:
    return Scripted(lambda t: rps)


def context(forecaster: Any = None, **kw: Any) -> StepContext:
    base: dict[str, Any] = dict(
        pools=(C5, C5X),
        lambda_fn=fakes.lambda_option(),
        planner=milp,
        planner_name="milp",
        forecaster=forecaster if forecaster is not None else flat(0.0),
        horizon_steps=6,
    )
    base.update(kw)
    return StepContext(**base)


def member(
    iid: str,
    pool: PoolOption = C5,
    *,
    state: InstanceState = InstanceState.RUNNING,
    launched_at_s: float = -3600.0,
    **kw: Any,
) -> FleetMember:
    return FleetMember(iid, pool.instance_type, Market(pool.market), state, launched_at_s, **kw)


def obs(
    now_s: float, fleet: tuple[FleetMember, ...] = (), arrivals: tuple[int, ...] | None = None, **kw: Any
) -> Observation:
    """An observation at run second ``now_s``: by default 10 arrivals in each of the last 60 seconds."""
    return Observation(now_s, EPOCH0 + now_s, arrivals if arrivals is not None else (10,) * 60, fleet, **kw)


class FakeCloud:
    """Applies actions at once: launches boot for ``boot_s``, drains mark, terminates remove."""

    def __init__(self, fleet: tuple[FleetMember, ...] = (), boot_s: float = 120.0) -> None:
        self.fleet = {m.instance_id: m for m in fleet}
        self.boot_s = boot_s
        self.launched: list[Launch] = []

    def apply(self, tick: Tick, now_s: float) -> None:
        for a in tick.actions:
            if isinstance(a, Launch):
                self.launched.append(a)
                for j in range(a.count):
                    iid = f"{a.token}-{j}"
                    self.fleet[iid] = FleetMember(
                        iid, a.instance_type, a.market, InstanceState.PENDING, now_s, now_s + self.boot_s, token=a.token
                    )
            elif isinstance(a, Drain):
                self.fleet[a.instance_id] = replace(self.fleet[a.instance_id], draining=True)
            elif isinstance(a, Terminate):
                del self.fleet[a.instance_id]

    def at(self, now_s: float) -> tuple[FleetMember, ...]:
        for iid, m in list(self.fleet.items()):
            if m.state == InstanceState.PENDING and m.ready_at_s is not None and m.ready_at_s <= now_s:
                self.fleet[iid] = replace(m, state=InstanceState.RUNNING)
        return tuple(self.fleet.values())


def strict_json(tick: Tick) -> str:
    """The decision-log line, as strict JSON (no NaN)."""
    return json.dumps(tick.record(), allow_nan=False)


def launches(tick: Tick) -> list[Launch]:
    return [a for a in tick.actions if isinstance(a, Launch)]


def of(tick: Tick, kind: type) -> list[Any]:
    return [a for a in tick.actions if isinstance(a, kind)]


# --- purity and idempotence -------------------------------------------------------------------


def test_step_is_pure_inputs_unchanged_and_same_inputs_same_tick() -> None:
    ctx = context(flat(250.0), pools=(C5, C5X, C5_SPOT), batching=(SetBatching("c5.large", 4, 10.0),))
    fleet = (member("a"), member("b", C5_SPOT, notice_at_s=-5.0), member("c", C5X, draining=True))
    failed = ActionFailure(Launch("c5.xlarge", Market.ON_DEMAND, 1, "x"), "capacity", "none left", -10.0)
    o = obs(0.0, fleet, arrivals=tuple(range(120)), failures=(failed,))
    state = initial_state(ctx)
    state_before, obs_before = copy.deepcopy(state), copy.deepcopy(o)

    first, second = step(state, o, ctx), step(state, o, ctx)

    assert state == state_before and o == obs_before  # inputs untouched
    assert first.record() == second.record() and first.actions == second.actions
    assert first.state == second.state and first.state != state
    assert not first.state.history.flags.writeable
    with pytest.raises(ValueError):
        first.state.history[0] = 1.0


def test_same_observation_twice_launches_nothing_twice() -> None:
    ctx = context(flat(250.0))
    o = obs(0.0)
    t1 = step(initial_state(ctx), o, ctx)
    assert sum(a.count for a in launches(t1)) >= 2  # 250 req/s over 100-200 req/s pools

    t2 = step(t1.state, o, ctx)  # the launch is not in the fleet yet: it is pending, not launched again
    assert launches(t2) == []
    assert t2.record()["observed"]["seconds"] == 0  # the arrivals were not counted twice either

    cloud = FakeCloud()
    cloud.apply(t1, 0.0)
    t3 = step(t2.state, obs(60.0, cloud.at(60.0)), ctx)  # now it shows up, booting
    assert launches(t3) == [] and t3.state.book.pending == ()


def test_failed_launch_is_no_longer_pending_and_its_pool_is_avoided() -> None:
    ctx = context(flat(90.0), pools=(C5, C5X))
    t1 = step(initial_state(ctx), obs(0.0), ctx)
    (first,) = launches(t1)
    assert (first.instance_type, first.count) == ("c5.large", 1)  # the cheapest cover of 90 req/s

    failure = ActionFailure(first, "capacity", "InsufficientInstanceCapacity", 1.0)
    t2 = step(t1.state, obs(60.0, failures=(failure,)), ctx)
    (fallback,) = launches(t2)
    assert fallback.instance_type == "c5.xlarge"  # the next pool, not c5.large again
    assert t2.record()["plan"]["backed_off"] == [["c5.large", "on-demand", 1.0 + ctx.backoff_s]]
    # replaying the observation with the failure neither relaunches nor extends the back-off
    t3 = step(t2.state, obs(60.0, failures=(failure,)), ctx)
    assert launches(t3) == [] and t3.state.book.backoff == t2.state.book.backoff

    # once the back-off is over, c5.large is a candidate again
    assert t3.state.book.blocked(1.0 + ctx.backoff_s) == frozenset()


def test_throttled_launch_is_retried_without_back_off() -> None:
    ctx = context(flat(90.0))
    t1 = step(initial_state(ctx), obs(0.0), ctx)
    (first,) = launches(t1)
    t2 = step(t1.state, obs(60.0, failures=(ActionFailure(first, "throttled", "slow down", 1.0),)), ctx)
    (again,) = launches(t2)
    assert again.instance_type == first.instance_type and again.token != first.token
    assert t2.state.book.backoff == ()


# --- launching ahead, scaling in ---------------------------------------------------------------


def test_rising_forecast_launches_one_boot_ahead() -> None:
    """Boot 120 s = 2 steps: a rise at run second 240 is launched for at second 120, not before."""
    rise = Scripted(lambda t: 0.0 if t < 240 else 180.0)
    ctx = context(rise, lambda_enabled=False)
    state, cloud = initial_state(ctx), FakeCloud()
    launched_at: list[float] = []
    for now in (0.0, 60.0, 120.0, 180.0, 240.0):
        tick = step(state, obs(now, cloud.at(now)), ctx)
        strict_json(tick)
        if launches(tick):
            launched_at.append(now)
        cloud.apply(tick, now)
        state = tick.state
    assert launched_at == [120.0]
    serving = [m for m in cloud.at(240.0) if m.state == InstanceState.RUNNING]
    assert sum(C5X.capacity_rps if m.instance_type == "c5.xlarge" else C5.capacity_rps for m in serving) >= 180


def test_zero_boot_lag_plans_with_boot_0_and_booting_instances_serving() -> None:
    """For a simulator that boots at once: a need at second 240 is launched for at 240, not a boot ahead,
    and an instance still booting by the observation counts as serving."""
    rise = Scripted(lambda t: 0.0 if t < 240 else 180.0)
    ctx = context(rise, lambda_enabled=False, zero_boot_lag=True)
    state, launched_at = initial_state(ctx), []
    for now in (0.0, 60.0, 120.0, 180.0, 240.0):
        tick = step(state, obs(now), ctx)
        state = tick.state
        if launches(tick):
            launched_at.append(now)
    assert launched_at == [240.0]
    booting = (member("b", state=InstanceState.PENDING, launched_at_s=-10.0),)
    t = step(initial_state(ctx), obs(240.0, booting), ctx)
    assert t.plan["lambda_rps"] == 0.0 and sum(a.count for a in launches(t)) == 1  # 180 - 100 left


def test_scale_in_drains_first_and_terminates_only_an_empty_drained_instance() -> None:
    ctx = context(flat(50.0))
    fleet = (member("a"), member("b"), member("c"))
    t1 = step(initial_state(ctx), obs(0.0, fleet), ctx)
    drained = sorted(a.instance_id for a in of(t1, Drain))
    assert len(drained) == 2 and of(t1, Terminate) == []  # queued is 0, but the drain was not yet seen

    def observed(queued: int) -> tuple[FleetMember, ...]:
        return tuple(replace(m, draining=m.instance_id in drained, queued=queued) for m in fleet)

    t2 = step(t1.state, obs(60.0, observed(queued=3)), ctx)  # work in flight: wait
    assert of(t2, Terminate) == [] and of(t2, Drain) == []
    t3 = step(t2.state, obs(120.0, observed(queued=0)), ctx)
    assert sorted(a.instance_id for a in of(t3, Terminate)) == drained
    t4 = step(t3.state, obs(180.0, observed(queued=0)), ctx)  # still listed: not asked twice
    assert of(t4, Terminate) == [] and of(t4, Drain) == []


def test_terminate_waits_for_an_observation_after_the_drain() -> None:
    ctx = context(flat(0.0))
    t1 = step(initial_state(ctx), obs(0.0, (member("a"),)), ctx)
    assert of(t1, Drain) == [Drain("a")]
    drained = (member("a", draining=True, queued=0),)
    same_time = step(t1.state, obs(0.0, drained), ctx)  # drain applied, but no time has passed
    assert of(same_time, Terminate) == []
    assert of(step(same_time.state, obs(60.0, drained), ctx), Terminate) == [Terminate("a")]


def test_instance_within_its_minimum_billing_is_kept() -> None:
    ctx = context(flat(0.0))
    young = member("young", launched_at_s=-30.0)
    t = step(initial_state(ctx), obs(0.0, (young, member("old"))), ctx)
    assert [a.instance_id for a in of(t, Drain)] == ["old"]
    assert t.record()["plan"]["kept_min_billed"] == ["young"]


def test_min_and_max_instances_are_respected() -> None:
    capped = context(flat(10_000.0), max_instances=3)
    t = step(initial_state(capped), obs(0.0, (member("a"),)), capped)
    assert sum(a.count for a in launches(t)) == 2
    assert t.record()["plan"]["capped_by_max_instances"] > 0

    floor = context(flat(0.0), min_instances=2)
    t = step(initial_state(floor), obs(0.0), floor)
    assert [(a.instance_type, a.count) for a in launches(t)] == [("c5.large", 2)]  # the cheapest per request
    old = (member("a"), member("b"), member("c"))
    t = step(initial_state(floor), obs(0.0, old), floor)
    assert len(of(t, Drain)) == 1 and t.record()["plan"]["kept_min_instances"]


# --- spot notices ---------------------------------------------------------------------------------


def test_spot_notice_drains_replaces_in_another_pool_and_prewarms_lambda() -> None:
    lam = fakes.lambda_option(latency_ms=40.0)
    ctx = context(flat(180.0), pools=(C5_SPOT, C5X_SPOT, C5), lambda_fn=lam, spot_cover=0.0)
    fleet = (member("s1", C5_SPOT), member("s2", C5_SPOT, notice_at_s=-1.0))
    t1 = step(initial_state(ctx), obs(0.0, fleet), ctx)

    assert [a.instance_id for a in of(t1, Drain)] == ["s2"]
    replacement = [a for a in launches(t1) if "r-" in a.token]
    assert replacement and all((a.instance_type, a.market) != ("c5.large", Market.SPOT) for a in replacement)
    (prewarm,) = of(t1, Prewarm)
    assert prewarm.environments >= 4  # 100 req/s lost x 40 ms (Little's law)
    assert t1.record()["plan"]["spot"]["noticed"] == ["s2"]
    strict_json(t1)

    t2 = step(t1.state, obs(0.0, fleet), ctx)  # the same observation: answered already
    assert launches(t2) == [] and of(t2, Drain) == []


def test_noticed_instance_is_terminated_once_drained_and_empty() -> None:
    ctx = context(flat(0.0), pools=(C5_SPOT, C5))
    s = member("s", C5_SPOT, notice_at_s=-1.0)
    t1 = step(initial_state(ctx), obs(0.0, (s,)), ctx)
    assert of(t1, Drain) == [Drain("s")]
    t2 = step(t1.state, obs(60.0, (replace(s, draining=True, queued=0),)), ctx)
    assert of(t2, Terminate) == [Terminate("s")]


# --- observe, forecast, record ---------------------------------------------------------------------


def test_history_keeps_the_last_day_and_an_hour_read_only_and_counts_each_second_once() -> None:
    ctx = context()
    long = tuple(int(x) for x in np.arange(HISTORY_SECONDS + 500) % 97)
    t1 = step(initial_state(ctx), obs(0.0, arrivals=long), ctx)
    h = t1.state.history
    assert h.size == HISTORY_SECONDS and h[-1] == long[-1] and h[0] == long[500] and not h.flags.writeable

    t2 = step(t1.state, obs(60.0, arrivals=(7,) * 60), ctx)
    assert t2.state.history.size == HISTORY_SECONDS and list(t2.state.history[-60:]) == [7.0] * 60
    t3 = step(t2.state, obs(150.0, arrivals=(5,) * 60), ctx)  # 90 s passed, 60 reported: 30 unobserved
    tail = t3.state.history[-90:]
    assert np.isnan(tail[:30]).all() and list(tail[30:]) == [5.0] * 60


def test_minutes_map_onto_the_controller_interval() -> None:
    f = np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 5.0], [4.0, 4.0]])
    assert np.array_equal(minutes_to_steps(f, 0.0, 60.0, 3), f[:3])
    assert np.array_equal(minutes_to_steps(f, 0.0, 120.0, 2), [[3.0, 2.0], [4.0, 5.0]])
    assert np.array_equal(minutes_to_steps(f, 0.0, 30.0, 3), [[1.0, 2.0], [1.0, 2.0], [3.0, 1.0]])
    assert np.array_equal(minutes_to_steps(f, 30.0, 60.0, 1), [[3.0, 2.0]])  # spans minutes 0 and 1
    assert np.array_equal(minutes_to_steps(f, 0.0, 60.0, 6)[4:], [[4.0, 4.0], [4.0, 4.0]])  # past H: hold


def test_decision_log_record_is_json_with_forecast_plan_and_actions() -> None:
    ctx = context(flat(250.0), batching=(SetBatching("c5.large", 4, 10.0),))
    t = step(initial_state(ctx), obs(0.0), ctx)
    rec = json.loads(strict_json(t))
    assert rec["forecast"][0] == [250.0, 250.0, 250.0] and rec["quantiles"] == list(QS)
    plan = rec["plan"]
    assert plan["planner"] == "milp" and plan["quantile"] == 0.9 and plan["demand_rps"][0] == 250.0
    assert {"launches", "terminations", "lambda_rps", "prewarm", "spot_risk_ok", "cost"} <= set(plan)
    assert rec["expected_usd"] > 0 and rec["observed"]["arrivals"] == 600
    assert [a["action"] for a in rec["actions"]][:2] == ["SetBatching", "Launch"]
    again = step(t.state, obs(60.0), ctx)
    assert of(again, SetBatching) == []  # batching is sent once


def test_state_equality_and_context_validation() -> None:
    assert ControllerState() == ControllerState()
    assert ControllerState(history=np.array([1.0, np.nan])) == ControllerState(history=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="quantile"):
        context(quantile=0.75)
    with pytest.raises(ValueError, match="min_instances"):
        context(min_instances=3, max_instances=2)
