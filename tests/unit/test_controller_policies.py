"""The named policies (orchestrator/controller/policies.py): each one's configuration and the behaviour
that defines it (MArk's running-max forecast and scale-in hysteresis, Lambda only, a static fleet, the
oracle's look-ahead), the factory, and the planner options MArk's release needs."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from orchestrator.config import DeploymentConfig
from orchestrator.controller import policies
from orchestrator.controller.actions import Drain, Launch, Prewarm, SetBatching, Terminate
from orchestrator.controller.forecasting import OnlineEnsemble, OnlineLSTM, RunningPeakMax, StaticForecaster, TrueFuture
from orchestrator.controller.policies import (
    POLICIES,
    StepController,
    build_controller,
    inputs_from_config,
    static_peak_fleet,
)
from orchestrator.controller.state import Observation
from orchestrator.controller.step import initial_state, step
from orchestrator.policy.planning import ON_DEMAND, SPOT, mark_greedy, milp
from orchestrator.types import Market, Slo
from tests import fakes
from tests.unit.test_controller_step import (
    C5,
    C5_SPOT,
    C5X,
    C5X_SPOT,
    EPOCH0,
    FakeCloud,
    Scripted,
    context,
    launches,
    obs,
    of,
    strict_json,
)

POOLS = (C5, C5X, C5_SPOT, C5X_SPOT)
BATCHING = (("c5.large", 4, 10.0), ("c5.xlarge", 8, 12.0))
LAMBDA = fakes.lambda_option(latency_ms=40.0)
INPUTS: dict[str, Any] = dict(pools=POOLS, batching=BATCHING, lambda_fn=LAMBDA)


def controller(name: str, **kw: Any) -> StepController:
    c = build_controller(name, **{**INPUTS, **kw})
    assert isinstance(c, StepController) and c.name == name
    return c


def run(c: StepController, rates: list[float], *, start_s: float = 0.0) -> tuple[list[Any], FakeCloud]:
    """Step ``c`` once a minute; minute k brings ``rates[k]`` arrivals each second. Returns the ticks."""
    cloud = FakeCloud(boot_s=120.0)
    state, ticks = c.initial_state(), []
    for k, rate in enumerate(rates):
        now = start_s + 60.0 * k
        future = None
        if c.future_s:
            per_s = [rates[min(len(rates) - 1, k + 1 + j // 60)] for j in range(c.future_s)]
            future = tuple(int(r) for r in per_s)
        o = Observation(now, EPOCH0 + now, (int(rate),) * 60, cloud.at(now), future_arrivals=future)
        tick = c.step(state, o)
        strict_json(tick)
        cloud.apply(tick, now)
        ticks.append(tick)
        state = tick.state
    return ticks, cloud


def test_policy_names() -> None:
    assert POLICIES == ("ours", "mark-release", "mark-paper", "static-peak", "lambda-only", "oracle")


def test_mark_release_forecasts_1_2_times_the_running_max_of_the_peak() -> None:
    c = controller("mark-release")
    state = c.initial_state()
    forecasts = []
    for now, arrivals in ((0.0, (10,) * 59 + (50,)), (60.0, (30,) * 60), (120.0, (100,) + (0,) * 59)):
        tick = c.step(state, Observation(now, EPOCH0 + now, arrivals, ()))
        state = tick.state
        assert tick.forecast is not None and len(tick.forecast) == 6  # a 6-step look-ahead
        forecasts.append({v for row in tick.forecast for v in row})
    assert forecasts == [{60.0}, {60.0}, {120.0}]


def test_mark_release_configuration_spot_greedy_no_lambda_fixed_batches() -> None:
    c = controller("mark-release")
    ctx = c.context
    assert {p.market for p in ctx.pools} == {SPOT} and ctx.greedy_markets == (SPOT,)
    assert ctx.planner_name == "mark_greedy" and ctx.launch_overhead_s == 180.0
    assert ctx.horizon_steps == 6 and ctx.recent_plans == 6 and ctx.spot_cover == 0.0
    assert isinstance(ctx.forecaster, RunningPeakMax) and not ctx.lambda_enabled
    ticks, _ = run(c, [150.0] * 4)
    assert of(ticks[0], SetBatching) == [SetBatching("c5.large", 4, 0.0), SetBatching("c5.xlarge", 8, 0.0)]
    assert all(a.market == Market.SPOT for t in ticks for a in launches(t)) and launches(ticks[0])
    assert not any(of(t, Prewarm) for t in ticks)


def test_scale_in_waits_until_none_of_the_last_k_plans_needs_the_instance() -> None:
    """MArk's hysteresis: after a one-minute spike, instances go only once the spike's plan is older than
    the last k = 6 plans (k = 0: as soon as they serve and nothing needs them)."""
    spike = Scripted(lambda t: 250.0 if t < 60 else 50.0)

    def first_drain(k: int) -> int:
        ctx = context(spike, planner=mark_greedy, planner_name="mark_greedy", recent_plans=k, lambda_enabled=False)
        cloud, state = FakeCloud(boot_s=120.0), initial_state(ctx)
        for tick_no in range(12):
            now = 60.0 * tick_no
            tick = step(state, obs(now, cloud.at(now)), ctx)
            cloud.apply(tick, now)
            state = tick.state
            if of(tick, Drain):
                return tick_no
        return -1

    assert first_drain(0) == 2  # running at 120 s, its minimum billing spent
    assert first_drain(6) == 7  # the spike's plan (tick 0) has left the last 6


def test_mark_paper_configuration_lstm_greedy_on_demand_lambda_without_prewarm() -> None:
    c = controller("mark-paper")
    ctx = c.context
    assert {p.market for p in ctx.pools} == {ON_DEMAND} and ctx.greedy_markets == (ON_DEMAND,)
    assert isinstance(ctx.forecaster, StaticForecaster) and ctx.quantile == 0.9
    assert ctx.planner_name == "mark_greedy" and ctx.launch_overhead_s is None  # boot x price, as published
    assert ctx.lambda_enabled and not ctx.prewarm_from_plan and ctx.prewarm_floor == 0
    ticks, _ = run(c, [300.0] * 3)
    assert not any(of(t, Prewarm) for t in ticks)
    assert all(a.market == Market.ON_DEMAND for t in ticks for a in launches(t))


@pytest.mark.parametrize("kind", ["combined", "lstm"])
def test_ours_configuration_and_online_calibration_state(kind: str) -> None:
    c = controller("ours", slo=Slo(sl_min=0.99), forecaster_kind=kind)
    ctx = c.context
    assert isinstance(ctx.forecaster, OnlineEnsemble if kind == "combined" else OnlineLSTM) and ctx.quantile == 0.9
    assert ctx.planner_name == "milp" and ctx.spot_cover == 0.99 and ctx.prewarm_from_plan
    assert {p.key for p in ctx.pools} == {p.key for p in POOLS}
    history = tuple(int(x) for x in 100 + 20 * np.sin(np.arange(3600) / 300))
    t1 = c.step(c.initial_state(), Observation(3600.0, EPOCH0 + 3600.0, history, ()))
    again = c.step(t1.state, Observation(3600.0, EPOCH0 + 3600.0, history, ()))
    assert again.forecast == t1.forecast and again.state.forecaster_state == t1.state.forecaster_state
    t2 = c.step(t1.state, Observation(3660.0, EPOCH0 + 3660.0, (400,) * 60, ()))
    inner = t2.state.forecaster_state.inner
    for cal in inner.members if kind == "combined" else (inner,):  # each member's calibration state
        assert cal.log_adj[0].tolist() != [0.0, 0.0, 0.0] and not cal.log_adj[1:].any()  # h = 1 matured, missed
    if kind == "combined":  # the weights are scored on the same outcome: horizon 1 only
        assert inner.cum_loss[:, 0].any() and not inner.cum_loss[:, 1:].any()
        assert "LSTM" in ctx.forecaster.name and "quantile regression" in ctx.forecaster.name
    assert of(t1, SetBatching) == [SetBatching("c5.large", 4, 10.0), SetBatching("c5.xlarge", 8, 12.0)]
    with pytest.raises(ValueError, match="forecaster_kind"):
        controller("ours", forecaster_kind="prophet")


def test_lambda_only_never_launches() -> None:
    c = build_controller("lambda-only", lambda_fn=LAMBDA, lambda_prewarm=3)
    assert isinstance(c, StepController)
    ticks, cloud = run(c, [50.0, 500.0, 5000.0, 0.0, 800.0])
    assert not any(launches(t) for t in ticks) and not cloud.fleet
    assert [a for t in ticks for a in of(t, Prewarm)] == [Prewarm(3)]


def test_static_peak_launches_once_and_never_changes() -> None:
    c = controller("static-peak", peak_rps=450.0)
    pool, n = static_peak_fleet((C5, C5X), 450.0)
    assert (pool, n) == (C5, 5)  # 5 x 0.085 $/h beats 3 x 0.17 $/h
    ticks, cloud = run(c, [10.0, 400.0, 0.0, 450.0, 5.0, 0.0, 300.0])
    assert [len(launches(t)) for t in ticks] == [1, 0, 0, 0, 0, 0, 0]
    assert launches(ticks[0])[0] == Launch("c5.large", Market.ON_DEMAND, 5, "0p-c5.large-on-demand")
    assert not any(of(t, Drain) or of(t, Terminate) or of(t, Prewarm) for t in ticks)
    assert len(cloud.fleet) == 5
    with pytest.raises(ValueError, match="peak_rps"):
        build_controller("static-peak", **INPUTS)


def test_oracle_sees_the_true_future_and_launches_one_boot_ahead() -> None:
    c = controller("oracle", horizon_steps=6, lambda_enabled=False, markets=(ON_DEMAND,))
    assert isinstance(c.context.forecaster, TrueFuture) and c.future_s == 360
    assert dict(c.boot_seconds) == {"c5.large": 120.0, "c5.xlarge": 120.0} and not c.uses_lambda
    zero = controller("oracle", oracle_boot="zero")
    assert zero.context.zero_boot_lag and set(zero.boot_seconds.values()) == {0.0}
    rates = [0.0, 0.0, 0.0, 0.0, 180.0, 180.0, 180.0]  # minute 4 on: 180 req/s
    ticks, cloud = run(c, rates)
    assert [bool(launches(t)) for t in ticks[:4]] == [False, True, False, False]  # at 60 s for 180 s
    assert ticks[1].forecast is not None and [row[1] for row in ticks[1].forecast[:4]] == [0.0, 0.0, 180.0, 180.0]
    booted = [m for m in cloud.at(180.0) if m.state == "running"]
    assert sum(100.0 if m.instance_type == "c5.large" else 200.0 for m in booted) >= 180.0


def test_oracle_plans_no_dearer_than_milp_when_branch_and_bound_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Branch and bound stopped early returns its incumbent (MArk's plan as the start), here twice the
    LP + fleet program's cost: the oracle takes the cheaper, so it never plans worse than ``ours``."""
    pools = tuple(
        fakes.pool(t, m, cap)
        for t, cap in (("c5.large", 100.0), ("c5.xlarge", 200.0), ("g4dn.xlarge", 900.0), ("c6i.large", 105.0))
        for m in (ON_DEMAND, SPOT)
    )
    inp = fakes.plan_input([1800, 2300, 1700, 2600, 2100, 2500, 1900, 2400, 2200, 2000], pools=pools, spot_cover=0.98)
    monkeypatch.setattr(policies, "ORACLE_TIME_LIMIT_S", 1e-6)
    cut_off = milp(inp, 1e-6, exact=True).cost.total_usd
    lp_dp = milp(inp).cost.total_usd
    plan = policies._exact(inp)
    assert cut_off > 1.5 * lp_dp  # the case this guards: the incumbent is far from the optimum
    assert plan.planner == "oracle" and plan.cost.total_usd <= lp_dp + 1e-9


def test_every_policy_steps_and_logs_json() -> None:
    for name in POLICIES:
        c = controller(name, peak_rps=300.0)
        ticks, _ = run(c, [120.0, 300.0, 60.0])
        assert all(t.tick == k for k, t in enumerate(ticks))
        json.dumps([t.record() for t in ticks], allow_nan=False)


def test_built_from_a_deployment_config_and_the_capacity_table() -> None:
    cfg = DeploymentConfig.model_validate(
        {"fleet": {"instance_types": ["c5.large", "c5.xlarge"], "max_instances": 4}, "lambda": {"concurrency": 10}}
    )
    inputs = inputs_from_config(cfg)
    c = build_controller("ours", **inputs)
    assert isinstance(c, StepController)
    ctx = c.context
    assert {p.instance_type for p in ctx.pools} == {"c5.large", "c5.xlarge"} and ctx.max_instances == 4
    assert ctx.lambda_fn.concurrency_limit == 10 and ctx.prewarm_floor == cfg.lambda_.prewarm
    assert {a.instance_type for a in ctx.batching} == {"c5.large", "c5.xlarge"}
    tick = c.step(c.initial_state(), Observation(0.0, EPOCH0, (50,) * 600, ()))
    assert launches(tick)[0].token.startswith("mark-0p-")
    strict_json(tick)


def test_build_controller_refuses_unknown_names_and_inputs() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        build_controller("nope", **INPUTS)
    with pytest.raises(ValueError, match="unknown policy inputs colour"):
        build_controller("ours", colour="red")


def test_mark_greedy_launch_overhead_and_markets() -> None:
    """The release's flat 180 s launch overhead and spot market, as PlanInput options of mark_greedy."""
    slow_cheap = fakes.pool("c5.large", ON_DEMAND, 100.0, usd_per_hour=1.0, boot_seconds=300.0)
    fast_dear = fakes.pool("m5.large", ON_DEMAND, 100.0, usd_per_hour=1.5, boot_seconds=60.0)
    inp = fakes.plan_input([80.0], pools=(slow_cheap, fast_dear), spot_cover=0.0, lambda_fn=fakes.lambda_option(1.0))
    assert mark_greedy(inp).launches == (("m5.large", ON_DEMAND, 1),)  # boot x price: 120 s x 1.5 < 360 s x 1
    flat_overhead = replace(inp, launch_overhead_s=180.0)
    assert mark_greedy(flat_overhead).launches == (("c5.large", ON_DEMAND, 1),)  # 240 s x 1 < 240 s x 1.5
    spot = fakes.plan_input([150.0], pools=(C5, C5_SPOT), greedy_markets=(SPOT,), spot_cover=0.0)
    assert mark_greedy(spot).launches == (("c5.large", SPOT, 2),)
    with pytest.raises(ValueError, match="launch_overhead_s"):
        fakes.plan_input([1.0], launch_overhead_s=-1.0)


def test_a_controller_started_with_history_warms_its_forecaster_on_the_last_day_of_it() -> None:
    """A deployment live before the window (or a restarted controller): the first step replays the
    forecaster over the last day of the history it is given, so its calibration and weights start adapted."""
    from predictor.baselines import EWMA, LastValue
    from predictor.calibration import Calibration
    from predictor.ensemble import Ensemble
    from predictor.features import HISTORY_MINUTES, HORIZON
    from predictor.online import WARM_UP_MINUTES

    cal = Calibration(np.full((HORIZON, 3), 3.0))  # far too wide for this trace: warming narrows it
    ens = Ensemble([LastValue(calibration=cal), EWMA(alpha=0.3, calibration=cal)])
    c = controller("ours", forecaster=OnlineEnsemble(ens))
    n = 60 * (HISTORY_MINUTES + WARM_UP_MINUTES)
    history = tuple(int(x) for x in np.random.default_rng(0).poisson(50.0, n))
    warm = c.step(c.initial_state(), Observation(float(n), EPOCH0 + n, history, ())).state.forecaster_state.inner
    assert warm.cum_loss.any() and all(float(m.log_adj.max()) < -0.1 for m in warm.members)  # factors shrank
    short = history[-60 * HISTORY_MINUTES :]  # only the look-back: nothing to warm up on
    cold = c.step(c.initial_state(), Observation(float(n), EPOCH0 + n, short, ())).state.forecaster_state.inner
    assert not cold.cum_loss.any() and not any(m.log_adj.any() for m in cold.members)
