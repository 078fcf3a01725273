"""The SageMaker baseline: Application Auto Scaling target tracking (orchestrator/policy/target_tracking.py)
and its controller (orchestrator/controller/sagemaker.py), on hand-made minutes with known outcomes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from orchestrator.controller.actions import Drain, Launch, SetBatching, Terminate
from orchestrator.controller.sagemaker import (
    SageMakerController,
    SageMakerSizing,
    cheapest_sizing,
    pick_instance_type,
)
from orchestrator.controller.state import FleetMember, Observation
from orchestrator.economics.capacity import capacity_report, request_cpu_ms, with_request_cpu
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.economics.latency_profiles import profile_for
from orchestrator.policy.batching import capacity_at_slo
from orchestrator.policy.target_tracking import (
    NONE,
    SCALE_IN,
    SCALE_OUT,
    TargetTrackingError,
    TargetTrackingPolicy,
    TrackingDecision,
    TrackingState,
    evaluate,
    initial_state,
)
from orchestrator.types import InstanceState, Market, Slo

T = 100.0  # target: invocations per instance per minute
POLICY = TargetTrackingPolicy(target_value=T, min_capacity=1, max_capacity=50)


def run(
    policy: TargetTrackingPolicy, state: TrackingState, minutes: Sequence[tuple[float, int]], start_s: float = 60.0
) -> list[TrackingDecision]:
    """Evaluate one datapoint a minute: (invocations, in service) for each, at start_s, start_s + 60, ..."""
    out = []
    for i, (inv, n) in enumerate(minutes):
        d = evaluate(policy, state, now_s=start_s + 60.0 * i, invocations=inv, in_service=n)
        state = d.state
        out.append(d)
    return out


# --- the policy --------------------------------------------------------------------------------


def test_sustained_load_scales_out_after_exactly_three_datapoints_by_the_proportional_amount() -> None:
    # 2 instances, 530 invocations/min: 265 per instance > 100 for 3 minutes -> ceil(530 / 100) = 6.
    ds = run(POLICY, initial_state(POLICY, 2), [(530, 2)] * 3)
    assert [d.activity for d in ds] == [NONE, NONE, SCALE_OUT]
    assert [d.desired for d in ds] == [2, 2, 6]
    assert [d.alarm_high for d in ds] == [False, False, True]
    assert ds[-1].metric == pytest.approx(265.0)
    # an exact multiple of the target needs no extra instance: 500/min -> 5, not 6
    assert run(POLICY, initial_state(POLICY, 2), [(500, 2)] * 3)[-1].desired == 5


def test_the_scale_out_alarm_needs_consecutive_datapoints() -> None:
    # high, high, at target (not above), high, high: never 3 in a row
    minutes = [(300, 1), (300, 1), (100, 1), (300, 1), (300, 1)]
    ds = run(POLICY, initial_state(POLICY, 1), minutes)
    assert all(d.activity == NONE for d in ds)
    # a missing datapoint (nothing in service) breaks the run too
    ds = run(POLICY, initial_state(POLICY, 1), [(300, 1), (300, 0), (300, 1), (300, 1)])
    assert ds[1].metric is None and all(d.activity == NONE for d in ds)
    assert run(POLICY, initial_state(POLICY, 1), [(300, 1), (300, 0), (300, 1), (300, 1), (300, 1)])[-1].desired == 3


def test_scale_out_cooldown_adds_capacity_again_only_for_a_larger_scale_out() -> None:
    # Scale out 2 -> 6 at the third minute; the 4 new instances boot, the metric stays high (2 in service).
    state = run(POLICY, initial_state(POLICY, 2), [(530, 2)] * 3)[-1].state
    ds = run(POLICY, state, [(530, 2)] * 4, start_s=240.0)  # within the 300 s cooldown: same load
    assert all(d.alarm_high and d.activity == NONE for d in ds)
    assert all(d.desired == 6 for d in ds)
    # a larger load during the cooldown: AWS scales out "if a larger scale out is triggered"
    d = run(POLICY, ds[-1].state, [(810, 2)], start_s=480.0)[0]
    assert d.activity == SCALE_OUT and d.desired == 9
    d2 = run(POLICY, state, [(810, 2)], start_s=240.0)[0]
    assert d2.activity == SCALE_OUT and d2.desired == 9 and "during the cooldown" in d2.reason


def test_scale_in_needs_fifteen_low_datapoints_and_respects_its_cooldown() -> None:
    # 10 instances, 300/min: 30 per instance < 0.9 x 100; scale-in only at the 15th low minute, to 3.
    ds = run(POLICY, initial_state(POLICY, 10), [(300, 10)] * 15)
    assert [d.activity for d in ds] == [NONE] * 14 + [SCALE_IN]
    assert [d.alarm_low for d in ds] == [False] * 14 + [True]
    assert ds[-1].desired == 3
    t_in = 60.0 * 15
    # the load falls again: still low, but the next scale-in waits for the 300 s scale-in cooldown
    ds = run(POLICY, ds[-1].state, [(100, 3)] * 5, start_s=t_in + 60)
    assert [d.activity for d in ds] == [NONE, NONE, NONE, NONE, SCALE_IN]
    assert all("cooldown" in d.reason for d in ds[:4])
    assert ds[-1].desired == 1 and ds[-1].state.last_scale_in_s == t_in + 300


def test_scale_out_is_not_held_by_the_scale_in_cooldown() -> None:
    state = run(POLICY, initial_state(POLICY, 10), [(300, 10)] * 15)[-1].state  # scaled in to 3 at 900 s
    ds = run(POLICY, state, [(900, 3)] * 3, start_s=960.0)
    assert [d.activity for d in ds] == [NONE, NONE, SCALE_OUT] and ds[-1].desired == 9
    assert ds[-1].state.last_scale_in_s is None  # "the scale-in cooldown period stops"


def test_scale_in_never_removes_so_much_that_the_metric_would_pass_the_target() -> None:
    # 10 instances, 801/min = 80.1 per instance (< 90): ceil(8.01) = 9, not 8.
    assert run(POLICY, initial_state(POLICY, 10), [(801, 10)] * 15)[-1].desired == 9
    # 10 instances, 890/min = 89 per instance (< 90): 9 instances carry 98.9 <= 100, 8 would carry 111
    assert run(POLICY, initial_state(POLICY, 10), [(890, 10)] * 15)[-1].desired == 9
    # 10 instances, 950/min = 95 per instance: above 0.9 x target, no scale-in
    ds = run(POLICY, initial_state(POLICY, 10), [(950, 10)] * 20)
    assert all(d.activity == NONE and not d.alarm_low for d in ds)


def test_min_and_max_capacity_bound_the_desired_capacity() -> None:
    policy = TargetTrackingPolicy(target_value=T, min_capacity=2, max_capacity=4)
    assert run(policy, initial_state(policy, 1), [(10_000, 1)] * 3)[-1].desired == 4
    assert initial_state(policy, 9).desired == 4 and initial_state(policy, 0).desired == 2
    ds = run(policy, initial_state(policy, 4), [(0, 4)] * 15)
    assert ds[-1].activity == SCALE_IN and ds[-1].desired == 2
    # at max, more load does nothing
    ds = run(policy, initial_state(policy, 4), [(10_000, 4)] * 6)
    assert all(d.activity == NONE and d.desired == 4 for d in ds)


def test_disable_scale_in_and_invalid_policies() -> None:
    policy = TargetTrackingPolicy(target_value=T, disable_scale_in=True)
    assert run(policy, initial_state(policy, 5), [(0, 5)] * 20)[-1].desired == 5
    bad_policies: list[dict[str, Any]] = [
        {"target_value": 0.0},
        {"target_value": math.nan},
        {"target_value": T, "min_capacity": 3, "max_capacity": 2},
        {"target_value": T, "scale_in_ratio": 1.5},
        {"target_value": T, "scale_out_datapoints": 0},
        {"target_value": T, "scale_in_cooldown_s": -1.0},
    ]
    for bad in bad_policies:
        with pytest.raises(TargetTrackingError):
            TargetTrackingPolicy(**bad)
    with pytest.raises(TargetTrackingError, match="invocations"):
        evaluate(POLICY, initial_state(POLICY, 1), now_s=60, invocations=-1, in_service=1)


# --- the instance type a user would pick -------------------------------------------------------

TYPES = ["c5.large", "c5.xlarge", "m5.large", "g4dn.xlarge"]
SLO = Slo(rt_max_ms=200.0, sl_min=0.98)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def hand_b1_capacity(catalog: Catalog, instance_type: str) -> float:
    """Capacity at SLO of mobilenet_v2 with batch size 1, from the batching model directly."""
    prof = profile_for("mobilenet_v2", instance_type, catalog)
    cap = capacity_at_slo(prof.service, batch_size=1, batch_timeout_ms=0.0, rt_max_ms=200.0, sl_min=0.98)
    gpu = catalog.instance(instance_type).gpu is not None
    return with_request_cpu(cap, request_cpu_ms("mobilenet_v2"), prof.slots, gpu)


def test_the_picked_type_is_the_cheapest_per_request_at_sagemaker_prices(catalog: Catalog) -> None:
    # b = 1: price per request = ml.* USD/h / capacity; by hand over the four types.
    per_req = {t: catalog.sagemaker_usd_per_hour(t) / hand_b1_capacity(catalog, t) for t in TYPES}
    best = min(per_req, key=lambda t: per_req[t])
    assert best == "c5.xlarge"  # 0.204 $/h over ~223 req/s beats 0.102 over ~107 (c5.large)
    name, cap = pick_instance_type("mobilenet_v2", catalog, SLO, TYPES)
    assert name == best and cap == pytest.approx(hand_b1_capacity(catalog, best), rel=1e-9)

    # with the container's batching: the capacity table's on-demand rows, priced at ml.* by hand.
    rows = [
        r for r in capacity_report("mobilenet_v2", catalog, 200.0, 0.98, types=TYPES).rows if r.market == "on-demand"
    ]
    by_hand = min(rows, key=lambda r: catalog.sagemaker_usd_per_hour(r.instance_type) / r.capacity_rps)
    assert by_hand.instance_type == "g4dn.xlarge"
    sizing = cheapest_sizing("mobilenet_v2", catalog, SLO, TYPES, batching=True)
    assert (sizing.instance_type, sizing.batch_size, sizing.batch_timeout_ms) == (
        by_hand.instance_type,
        by_hand.batch_size,
        by_hand.batch_timeout_ms,
    )
    assert sizing.capacity_rps == pytest.approx(by_hand.capacity_rps, rel=1e-9)
    assert sizing.usd_per_hour == catalog.sagemaker_usd_per_hour("g4dn.xlarge") != by_hand.usd_per_hour


def test_the_pick_follows_sagemaker_prices_not_ec2_prices(catalog: Catalog) -> None:
    # ml.c5.xlarge at 0.25 $/h: at ml.* prices c5.large is now the cheaper per request, while at EC2
    # prices c5.xlarge still is; the pick must follow the SageMaker prices.
    raw = catalog.model_dump(by_alias=True)
    raw["instance_types"]["c5.xlarge"]["sagemaker_realtime_usd_per_hour"]["value"] = 0.25
    dear = Catalog.model_validate(raw)
    ec2 = {t: dear.price_usd_per_hour(t, "on-demand") / hand_b1_capacity(dear, t) for t in TYPES}
    assert min(ec2, key=lambda t: ec2[t]) == "c5.xlarge"
    assert pick_instance_type("mobilenet_v2", dear, SLO, TYPES)[0] == "c5.large"


def test_no_type_meeting_the_slo_is_a_clear_error(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="none of: c5.large"):
        pick_instance_type("mobilenet_v2", catalog, Slo(rt_max_ms=8.0, sl_min=0.98, epsilon_ms=1.0), ["c5.large"])


def test_the_controller_for_a_model_targets_half_the_capacity_at_slo_per_minute(catalog: Catalog) -> None:
    plain = SageMakerController.for_model("mobilenet_v2", catalog, SLO, TYPES)
    batched = SageMakerController.for_model("mobilenet_v2", catalog, SLO, TYPES, batching=True)
    assert (plain.name, plain.instance_type, plain.sizing.batch_size) == ("sagemaker", "c5.xlarge", 1)
    assert (batched.name, batched.instance_type) == ("sagemaker-batched", "g4dn.xlarge")
    assert batched.sizing.batch_size > 1
    for ctl in (plain, batched):
        assert ctl.policy.target_value == pytest.approx(ctl.sizing.capacity_rps * 60 * 0.5)
        assert ctl.interval_s == 60 and ctl.future_s == 0 and ctl.price_source == "sagemaker"
        assert dict(ctl.boot_seconds) == {ctl.instance_type: 300.0}
        assert ctl.policy.scale_out_cooldown_s == ctl.policy.scale_in_cooldown_s == 300.0
        assert (ctl.policy.scale_out_datapoints, ctl.policy.scale_in_datapoints) == (3, 15)


# --- the controller ----------------------------------------------------------------------------

SIZING = SageMakerSizing("c5.xlarge", capacity_rps=10.0, batch_size=1, batch_timeout_ms=0.0, usd_per_hour=0.204)
TYPE = SIZING.instance_type  # target: 10 x 60 x 0.5 = 300 invocations per instance per minute


def member(i: int, state: InstanceState = InstanceState.RUNNING, **kw: Any) -> FleetMember:
    return FleetMember(f"i-{i}", kw.pop("instance_type", TYPE), Market.ON_DEMAND, state, launched_at_s=0.0, **kw)


def obs(now_s: float, rps: int, fleet: list[FleetMember]) -> Observation:
    return Observation(now_s=now_s, epoch_s=1.7e9 + now_s, arrivals=(rps,) * 60, fleet=tuple(fleet))


def test_the_first_step_sets_batching_and_launches_the_initial_fleet() -> None:
    ctl = SageMakerController(SIZING, initial=2)
    tick = ctl.step(ctl.initial_state(), obs(0.0, 0, []))
    assert tick.actions == (SetBatching(TYPE, 1, 0.0), Launch(TYPE, Market.ON_DEMAND, 2, "sagemaker-0"))
    # the setting is sent once; the next step's launch (if any) has a token of its own
    tick2 = ctl.step(tick.state, obs(60.0, 0, []))
    assert not any(isinstance(a, SetBatching) for a in tick2.actions)
    assert tick2.actions == (Launch(TYPE, Market.ON_DEMAND, 2, "sagemaker-1"),)
    batched = SageMakerController(SageMakerSizing("g4dn.xlarge", 500.0, 16, 12.5, 0.736), batching=True)
    assert batched.step(batched.initial_state(), obs(0.0, 0, [])).actions == (
        SetBatching("g4dn.xlarge", 16, 12.5),
        Launch("g4dn.xlarge", Market.ON_DEMAND, 1, "sagemaker-batched-0"),
    )
    with pytest.raises(ValueError, match="batch size 1"):
        SageMakerController(SageMakerSizing("g4dn.xlarge", 500.0, 16, 12.5, 0.736), batching=False)


def test_booting_instances_are_not_double_counted() -> None:
    ctl = SageMakerController(SIZING, initial=1)
    state = ctl.initial_state()
    fleet = [member(0)]
    # 25 req/s = 1500/min on 1 instance: 5 x the target; 3 minutes -> desired ceil(1500 / 300) = 5
    launches = []
    for k in range(3):
        tick = ctl.step(state, obs(60.0 * (k + 1), 25, fleet))
        state = tick.state
        launches += [a for a in tick.actions if isinstance(a, Launch)]
    assert launches == [Launch(TYPE, Market.ON_DEMAND, 4, "sagemaker-2")]
    assert tick.plan["desired"] == 5 and tick.plan["alarm_high"] and tick.plan["metric"] == pytest.approx(1500.0)
    # the 4 boot for 5 minutes, the metric (per instance in service) stays at 1500: nothing more launched
    fleet = [member(0)] + [member(i, InstanceState.PENDING) for i in range(1, 5)]
    for k in range(3, 10):
        tick = ctl.step(state, obs(60.0 * (k + 1), 25, fleet))
        state = tick.state
        assert not any(isinstance(a, Launch) for a in tick.actions), tick.plan
        assert (tick.plan["in_service"], tick.plan["pending"], tick.plan["desired"]) == (1, 4, 5)
        assert tick.plan["metric"] == pytest.approx(1500.0)


def test_scale_in_drains_the_least_busy_then_terminates_them_once_empty() -> None:
    ctl = SageMakerController(SIZING, initial=3)
    state = ctl.initial_state()
    fleet = [member(0, queued=4), member(1, queued=0), member(2, queued=1)]
    # 2 req/s = 120/min over 3: 40 per instance < 0.9 x 300 for 15 minutes -> ceil(120 / 300) = 1
    for k in range(15):
        tick = ctl.step(state, obs(60.0 * (k + 1), 2, fleet))
        state = tick.state
    assert tick.plan["activity"] == "scale-in" and tick.plan["desired"] == 1
    assert [a for a in tick.actions if not isinstance(a, SetBatching)] == [Drain("i-1"), Drain("i-2")]
    fleet = [member(0, queued=4), member(1, draining=True), member(2, draining=True, queued=2)]
    tick = ctl.step(state, obs(960.0, 2, fleet))
    assert tick.actions == (Terminate("i-1"),)  # i-2 still has work: terminated at a later step


def test_other_types_in_the_fleet_are_not_this_controllers() -> None:
    ctl = SageMakerController(SIZING, initial=1)
    tick = ctl.step(ctl.initial_state(), obs(60.0, 0, [member(0), member(9, instance_type="g5.xlarge")]))
    assert [a for a in tick.actions if not isinstance(a, SetBatching)] == []


def test_the_controller_is_pure_and_its_ticks_are_json_serialisable() -> None:
    ctl = SageMakerController(SIZING, initial=1)
    script = [(0, [member(0)])] * 2 + [(25, [member(0)])] * 4 + [(25, [member(0), member(1, InstanceState.PENDING)])]
    state = ctl.initial_state()
    for k, (rps, fleet) in enumerate(script):
        o = obs(60.0 * (k + 1), rps, fleet)
        a, b = ctl.step(state, o), ctl.step(state, o)  # the same state and observation twice
        assert a == b and a.record() == b.record()
        line = json.dumps(a.record(), allow_nan=False)
        assert json.loads(line)["plan"]["target"] == 300.0
        state = a.state
    assert state.tick == len(script)
    # the state carried is the only memory: replaying from the initial state gives the same ticks
    again = ctl.initial_state()
    for k, (rps, fleet) in enumerate(script):
        again = ctl.step(again, obs(60.0 * (k + 1), rps, fleet)).state
    assert again == state
