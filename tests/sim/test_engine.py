"""The simulator's serving model and runner on hand-made traces with known outcomes.

Each test pins one behaviour that a broken implementation would get wrong: queueing against the
M/D/1 formula, the 60 s minimum, boot lag, Lambda absorbing a spike (and its absence), the worker's
batch timeout and deadline rules, spot notices (drain, reclaim 120 s later, work re-dispatched),
conservation of requests, determinism, and dispatch equal to ``policy/dispatch.decide``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.controller.actions import Drain, Launch, Prewarm, SetBatching, Terminate
from orchestrator.policy.dispatch import Route, decide
from orchestrator.sim.engine import INSTANCE, LAMBDA, REJECTED, LambdaModel, ServingModel, WorkerModel
from orchestrator.sim.runner import LambdaSettings, SimSetup, Simulation, simulate
from orchestrator.types import InstanceState, Market, Slo
from tests.fakes import catalog
from tests.sim.scripted import Scripted, det_profile, static_fleet

C5 = "c5.large"
M5 = "m5.large"
OD, SPOT = Market.ON_DEMAND, Market.SPOT
C5_USD_H = 0.085  # profiles/catalog.yaml, on-demand


def setup(**kw: Any) -> SimSetup:
    """One c5.large of 10 ms deterministic service, no batching, Lambda off, unless told otherwise."""
    base: dict[str, Any] = dict(
        model="mobilenet_v2",
        slo=Slo(rt_max_ms=200.0, sl_min=0.98),
        catalog=catalog(),
        instance_types=(C5,),
        profiles={C5: det_profile(C5, [(1, 10.0)])},
        batching={C5: (1, 0.0)},
        lambda_=LambdaSettings(enabled=False),
    )
    base.update(kw)
    return SimSetup(**base)


def lambda_on(**kw: Any) -> LambdaSettings:
    """Lambda with a deterministic 20 ms warm invocation (2048 MB: no CPU factor)."""
    return LambdaSettings(enabled=True, memory_mb=2048, concurrency_limit=100, batches=((1, 20.0, 20.0),), **kw)


def run(counts: Any, controller: Any, s: SimSetup) -> Simulation:
    sim = Simulation(np.asarray(counts), controller, s)
    sim.result = sim.run()  # type: ignore[attr-defined]
    return sim


def per_request(sim: Simulation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = sim.engine
    at = np.frombuffer(e.at, dtype=np.float64)
    done = np.frombuffer(e.done_s, dtype=np.float64)
    return at, done, np.frombuffer(e.route, dtype=np.uint8)


def conserved(r: Any, counts: Any) -> None:
    assert r.arrivals == int(np.sum(counts))
    assert r.on_time + r.late + r.rejected == r.arrivals
    assert sum(r.series.arrivals) == r.arrivals
    assert sum(r.series.lambda_requests) == r.lambda_requests
    assert sum(r.series.on_time) == r.on_time


# --- queueing ------------------------------------------------------------------------------------


def test_one_worker_deterministic_service_matches_md1() -> None:
    """Poisson arrivals (60/s), one server, 10 ms deterministic: mean time in system from the
    Pollaczek-Khinchine formula, D + rho D / (2 (1 - rho)) = 17.5 ms."""
    lam, d_s = 60.0, 0.010
    counts = np.random.default_rng(7).poisson(lam, 3000)
    sim = run(counts, Scripted(), setup(initial_fleet=((C5, "on-demand", 1),)))
    at, done, route = per_request(sim)
    assert (route == INSTANCE).all()
    rho = lam * d_s
    expected_ms = 1000 * (d_s + rho * d_s / (2 * (1 - rho)))
    mean_ms = float(np.mean(done - at)) * 1000
    assert mean_ms == pytest.approx(expected_ms, rel=0.03)
    # and the queue is what makes it: without waiting every request would take exactly 10 ms
    assert mean_ms > 1000 * d_s * 1.5


def test_batch_timeout_holds_a_lone_request_for_partners() -> None:
    """b = 4, W = 50 ms at 2 req/s: a request almost always waits the whole timeout, then 10 ms."""
    s = setup(
        profiles={C5: det_profile(C5, [(1, 10.0), (4, 16.0)])},
        batching={C5: (4, 50.0)},
        initial_fleet=((C5, "on-demand", 1),),
    )
    r = run(np.full(600, 2), Scripted(), s).result  # type: ignore[attr-defined]
    assert r.latency_p50_ms == pytest.approx(60.0, abs=1.0)
    assert r.on_time == r.arrivals


def test_deadline_rule_sends_the_batch_before_rtmax() -> None:
    """W = 500 ms is past RTmax: the worker's deadline rule sends the batch so that it finishes just
    inside RTmax (deadline - predicted service - 1 ms margin), so requests are on time, not late."""
    s = setup(
        profiles={C5: det_profile(C5, [(1, 10.0), (8, 30.0)])},
        batching={C5: (8, 500.0)},
        initial_fleet=((C5, "on-demand", 1),),
    )
    r = run(np.full(300, 1), Scripted(), s).result  # type: ignore[attr-defined]
    assert 190.0 <= r.latency_p50_ms <= 200.0
    assert r.on_time >= r.arrivals - 2  # the first batch, before any service time was observed
    assert r.late <= 2


# --- billing and boot ----------------------------------------------------------------------------


def test_short_lived_instance_bills_the_60_s_minimum() -> None:
    script = Scripted({0.0: [Launch(C5, OD, 1, "a")], 10.0: [Terminate("sim-00000001")]}, interval_s=10)
    r = run(np.zeros(120, dtype=int), script, setup()).result  # type: ignore[attr-defined]
    assert r.instance_usd == pytest.approx(60 * C5_USD_H / 3600)
    assert r.instance_hours == {"c5.large/on-demand": pytest.approx(60 / 3600)}
    assert r.launches == 1


def test_instance_bills_from_launch_including_boot_per_second() -> None:
    script = Scripted({0.0: [Launch(C5, OD, 1, "a")], 130.0: [Terminate("sim-00000001")]}, interval_s=10)
    r = run(np.zeros(200, dtype=int), script, setup()).result  # type: ignore[attr-defined]
    assert r.instance_usd == pytest.approx(130 * C5_USD_H / 3600)
    assert r.series.cost_usd[-1] == pytest.approx(r.total_usd)


def test_sagemaker_price_source_bills_the_ml_price() -> None:
    script = Scripted({0.0: [Launch(C5, OD, 1, "a")]})
    r = run(np.zeros(3600, dtype=int), script, setup(price_source="sagemaker")).result  # type: ignore[attr-defined]
    assert r.instance_usd == pytest.approx(catalog().instance(C5).sagemaker_realtime_usd_per_hour.value)


@pytest.mark.parametrize("lambda_enabled", [True, False])
def test_boot_lag_delays_capacity(lambda_enabled: bool) -> None:
    """Launched at t = 0 with the catalog's 60 s boot: before 60 s requests go to Lambda (or are
    rejected without it), afterwards to the instance."""
    counts = np.full(180, 10)
    s = setup(lambda_=lambda_on() if lambda_enabled else LambdaSettings(enabled=False))
    sim = run(counts, static_fleet(C5, 1), s)
    at, _, route = per_request(sim)
    boot = catalog().boot_seconds(C5)
    before, after = at < boot, at >= boot + 0.05
    assert (route[before] == (LAMBDA if lambda_enabled else REJECTED)).all()
    assert (route[after] == INSTANCE).all()
    conserved(sim.result, counts)  # type: ignore[attr-defined]
    assert sim.result.series.booting[0] == 0  # type: ignore[attr-defined]  # ready at 60 s = the minute's end
    assert sim.result.series.fleet["c5.large/on-demand"][0] == 1  # type: ignore[attr-defined]


# --- Lambda --------------------------------------------------------------------------------------

SPIKE = np.concatenate([np.full(60, 50), np.full(20, 300), np.full(60, 50)])  # 100 req/s of capacity


def test_spike_above_capacity_goes_to_lambda_when_enabled() -> None:
    fleet = ((C5, "on-demand", 1),)
    on = run(SPIKE, Scripted(), setup(initial_fleet=fleet, lambda_=lambda_on())).result  # type: ignore[attr-defined]
    off = run(SPIKE, Scripted(), setup(initial_fleet=fleet)).result  # type: ignore[attr-defined]
    excess = (300 - 100) * 20
    assert on.lambda_requests >= 0.8 * excess
    assert sum(on.series.lambda_requests[1:2]) == on.lambda_requests  # all in the spike's minute
    assert off.lambda_requests == 0
    assert off.late + off.rejected >= 0.5 * excess  # queued past RTmax, then 503 at the queue bound
    assert off.rejected > 0
    assert on.slo_attainment > off.slo_attainment + 0.1
    conserved(on, SPIKE)
    conserved(off, SPIKE)


def test_prewarmed_lambda_takes_the_spike_on_time() -> None:
    fleet = ((C5, "on-demand", 1),)
    script = Scripted({0.0: [Prewarm(10)]})
    sim = run(SPIKE, script, setup(initial_fleet=fleet, lambda_=lambda_on()))
    r = sim.result  # type: ignore[attr-defined]
    cold = run(SPIKE, Scripted(), setup(initial_fleet=fleet, lambda_=lambda_on())).result  # type: ignore[attr-defined]
    assert r.lambda_requests > 0
    # Late only when all ten are busy at once and the worker's queue is one past the deadline (decide
    # then prefers the late worker to a cold start); without the prewarm the first cold starts are late.
    assert r.slo_attainment >= 0.995
    assert r.late < cold.late
    assert sim.engine.l_cold_starts == 10  # the ten prewarmed environments, and no other
    assert script.seen[1].lambda_warm == 10  # held warm at the next step
    # billed: ten warm-up pings (INIT + 1 ms) and every invocation at 20 ms, 2048 MB
    lam = catalog().lambda_
    gb_s = (10 * (1000 + 1) + r.lambda_requests * 20) / 1000 * 2
    requests_usd = (10 + r.lambda_requests) * lam.usd_per_request
    assert r.lambda_usd == pytest.approx(gb_s * lam.gb_second_price("x86_64") + requests_usd)


def test_idle_lambda_environments_expire_after_the_ttl() -> None:
    counts = np.zeros(1000, dtype=int)
    counts[0] = 1  # one request: one cold environment, idle from ~1.2 s
    script = Scripted()
    sim = run(counts, script, setup(lambda_=lambda_on(idle_ttl_s=300.0)))
    warm = [o.lambda_warm for o in script.seen]
    assert warm[1:5] == [1, 1, 1, 1]  # t = 60 .. 240
    assert warm[6:] == [0] * (len(warm) - 6)  # t >= 360: expired
    assert sim.result.lambda_requests == 1  # type: ignore[attr-defined]


def test_lambda_concurrency_limit_holds_requests_then_rejects() -> None:
    """Concurrency 2, no worker: at most 2 in Lambda at once; the front door holds up to 2 x 4 more,
    and past that rejects (never more than the limit running)."""
    counts = np.zeros(30, dtype=int)
    counts[0] = 40  # 40 requests in the first second
    s = setup(lambda_=LambdaSettings(enabled=True, concurrency_limit=2, batches=((1, 20.0, 20.0),)))
    sim = run(counts, Scripted(), s)
    r = sim.result  # type: ignore[attr-defined]
    assert r.rejected > 0
    assert r.lambda_requests + r.rejected == 40
    assert sim.engine.l_cold_starts == 2
    conserved(r, counts)


# --- spot ----------------------------------------------------------------------------------------


def test_spot_notice_drains_then_the_instance_goes_120_s_later() -> None:
    counts = np.full(400, 20)
    script = Scripted()
    s = setup(initial_fleet=((C5, "spot", 1),), spot_schedule=((100.0, "sim-00000001"),), lambda_=lambda_on())
    sim = run(counts, script, s)
    r = sim.result  # type: ignore[attr-defined]
    at, done, route = per_request(sim)
    assert (route[at < 100] == INSTANCE).all()
    assert (route[at > 100.05] == LAMBDA).all()  # draining: no new work; Lambda covers
    by_t = {o.now_s: o for o in script.seen}
    (m,) = by_t[120.0].fleet
    assert (m.notice_at_s, m.draining, m.state) == (100.0, True, InstanceState.DRAINING)
    assert by_t[240.0].fleet == ()  # reclaimed at 220 s
    assert r.interruptions == 1
    assert r.instance_hours == {"c5.large/spot": pytest.approx(220 / 3600)}
    assert r.instance_usd == pytest.approx(220 * catalog().price_usd_per_hour(C5, "spot") / 3600)
    assert np.isfinite(done).all()
    conserved(r, counts)


def test_work_left_on_a_reclaimed_spot_instance_is_redispatched() -> None:
    """A slow spot worker (5 s per request) holds a queue it cannot finish in its 120 s notice: at
    reclaim the rest goes to the on-demand worker launched meanwhile; nothing is lost."""
    counts = np.full(200, 2)
    s = setup(
        instance_types=(C5, M5),
        profiles={C5: det_profile(C5, [(1, 5000.0)]), M5: det_profile(M5, [(1, 10.0)])},
        batching={C5: (1, 0.0), M5: (1, 0.0)},
        initial_fleet=((C5, "spot", 1),),
        spot_schedule=((30.0, "sim-00000001"),),
    )
    sim = run(counts, Scripted({0.0: [Launch(M5, OD, 1, "b")]}), s)
    r = sim.result  # type: ignore[attr-defined]
    at, done, route = per_request(sim)
    assert sim.engine.redispatched >= 20
    moved = (at < 30) & (done >= 150)  # accepted by the spot worker, answered after its reclaim
    assert moved.sum() >= 20
    assert (route[moved] == INSTANCE).all()
    assert np.isfinite(done).all()
    assert any("re-dispatched" in n for n in r.notes)
    conserved(r, counts)


def test_spot_hazard_interrupts_spot_only_and_is_seeded() -> None:
    counts = np.zeros(7200, dtype=int)
    s = setup(
        initial_fleet=((C5, "spot", 20), (C5, "on-demand", 5)),
        spot_hazard_per_hour={"*": 1.0},
        seed=3,
    )
    r1 = run(counts, Scripted(), s).result  # type: ignore[attr-defined]
    r2 = run(counts, Scripted(), s).result  # type: ignore[attr-defined]
    assert 8 <= r1.interruptions <= 20  # 1 - e^-2 of 20 expected over 2 h (about 17)
    assert r1.interruptions == r2.interruptions
    assert r1.instance_hours["c5.large/on-demand"] == pytest.approx(10.0)  # 5 x 2 h, none interrupted


# --- the controller loop -------------------------------------------------------------------------


def test_observations_failures_and_idempotent_launches() -> None:
    counts = np.arange(300) % 7
    script = Scripted(
        {
            0.0: [Launch(C5, OD, 1, "tok"), Launch("g5.xlarge", OD, 1, "gpu")],
            60.0: [Launch(C5, OD, 1, "tok"), Launch(C5, OD, 5, "more"), Terminate("sim-99"), Drain("sim-98")],
            120.0: [SetBatching(C5, 0, 5.0)],
        },
        future_s=90,
    )
    sim = run(counts, script, setup(max_instances=3))
    seen = script.seen
    assert [o.now_s for o in seen] == [0.0, 60.0, 120.0, 180.0, 240.0]
    assert seen[0].arrivals == ()
    assert seen[1].arrivals == tuple(int(x) for x in counts[:60])
    assert seen[2].future_arrivals == tuple(int(x) for x in counts[120:210])
    assert [f.reason for f in seen[1].failures] == ["error"]  # g5.xlarge is not allowed here
    assert [f.reason for f in seen[2].failures] == ["capacity", "not_found", "not_found"]
    assert [f.reason for f in seen[3].failures] == ["error"]  # batch size 0
    assert [m.instance_id for m in seen[2].fleet] == ["sim-00000001"]  # the repeated token launched nothing
    assert seen[2].fleet[0].token == "tok"
    assert seen[2].requests == seen[2].within_slo == sum(counts[:120]) - seen[1].requests
    assert sim.result.launches == 1  # type: ignore[attr-defined]
    assert len(sim.result.ticks) == 5  # type: ignore[attr-defined]


def test_forecast_rows_map_onto_minutes() -> None:
    script = Scripted(interval_s=120, forecast=((10.0, 20.0), (30.0, 40.0)), quantiles=(0.5, 0.9))
    r = run(np.ones(300, dtype=int), script, setup()).result  # type: ignore[attr-defined]
    assert r.series.quantiles == (0.5, 0.9)
    assert r.series.forecast_rps == ((10.0, 20.0),) * 5


def test_progress_is_reported_at_most_about_100_times() -> None:
    calls: list[float] = []
    simulate(np.ones(10_000, dtype=int), Scripted(), setup(), progress=calls.append)
    assert 2 <= len(calls) <= 102
    assert calls == sorted(calls) and calls[-1] == 1.0


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        simulate(np.ones((2, 2)), Scripted(), setup())
    with pytest.raises(ValueError, match="whole numbers"):
        simulate(np.array([1.5, 2]), Scripted(), setup())
    with pytest.raises(ValueError, match="empty"):
        simulate(np.array([], dtype=int), Scripted(), setup())


# --- conservation and determinism ----------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 60), min_size=1, max_size=240),
    lam=st.booleans(),
    spot_at=st.one_of(st.none(), st.floats(0, 240)),
    bound=st.integers(1, 40),
    batch=st.sampled_from([(1, 0.0), (4, 0.0), (4, 30.0), (8, 400.0)]),
    seed=st.integers(0, 2**16),
)
def test_every_arrival_ends_exactly_once(
    counts: list[int], lam: bool, spot_at: float | None, bound: int, batch: tuple[int, float], seed: int
) -> None:
    s = setup(
        profiles={C5: det_profile(C5, [(1, 15.0), (4, 30.0), (8, 50.0)])},
        batching={C5: batch},
        initial_fleet=((C5, "spot", 1),),
        spot_schedule=((spot_at, C5),) if spot_at is not None else (),
        lambda_=LambdaSettings(enabled=lam, concurrency_limit=3, batches=((1, 20.0, 30.0),)),
        queue_bound=bound,
        seed=seed,
    )
    script = Scripted({60.0: [Launch(C5, OD, 1, "x")], 120.0: [Drain("sim-00000002")]})
    sim = run(counts, script, s)
    r = sim.result  # type: ignore[attr-defined]
    conserved(r, counts)
    at, done, route = per_request(sim)
    assert np.isfinite(done).all() and (done >= at).all()
    assert r.lambda_requests == int((route == LAMBDA).sum())
    if not lam:
        assert r.lambda_requests == 0


def test_same_seed_same_result() -> None:
    counts = np.random.default_rng(1).poisson(80, 600)
    s = setup(
        initial_fleet=((C5, "spot", 1),),
        lambda_=lambda_on(),
        spot_hazard_per_hour={C5: 6.0},
        profiles={C5: dataclasses.replace(det_profile(C5, [(1, 10.0)]), batches=((1, 9.0, 14.0),))},
        seed=5,
    )
    a = run(counts, static_fleet(C5, 1, SPOT), s).result  # type: ignore[attr-defined]
    b = run(counts, static_fleet(C5, 1, SPOT), s).result  # type: ignore[attr-defined]
    c = run(counts, static_fleet(C5, 1, SPOT), dataclasses.replace(s, seed=6)).result  # type: ignore[attr-defined]
    strip = lambda r: {k: v for k, v in r.summary().items() if k != "wall_seconds"}  # noqa: E731
    assert strip(a) == strip(b)
    assert a.series == b.series and a.ticks == b.ticks
    assert strip(a) != strip(c)


# --- dispatch is decide() ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    workers=st.lists(
        st.tuples(
            st.sampled_from([0.034, 0.085, 0.17]),  # usd per hour
            st.sampled_from([(1, 0.0), (2, 0.0), (4, 5.0), (8, 20.0)]),  # batching
            st.integers(1, 4),  # slots
            st.integers(0, 20),  # outstanding
        ),
        max_size=5,
    ),
    enabled=st.booleans(),
    idle=st.integers(0, 3),
    busy=st.integers(0, 4),
    waiting=st.integers(0, 12),
    budget=st.floats(-50, 400),
)
def test_choose_is_decide(
    workers: list[tuple[float, tuple[int, float], int, int]],
    enabled: bool,
    idle: int,
    busy: int,
    waiting: int,
    budget: float,
) -> None:
    lam = LambdaModel(enabled=enabled, concurrency_limit=4, batches=((1, 20.0, 30.0),))
    e = ServingModel(np.zeros(0), 200.0, lam, ledger=None, queue_bound=16)  # type: ignore[arg-type]
    rows = ((1, 8.0, 10.0), (2, 14.0, 18.0), (4, 30.0, 35.0), (8, 60.0, 66.0))
    for k, (usd, (b, w), slots, out) in enumerate(workers):
        e.add_worker(f"w{k}", WorkerModel(C5, slots, rows, b, w), "on-demand", usd, 0.0)
        e.workers[f"w{k}"].out = min(out, 16)
    if enabled:
        busy = min(busy, 4 - idle) if idle <= 4 else 0
        e.l_idle.extend([0.0] * idle)
        e.l_busy = busy
        if idle == 0 and busy == 4:
            e.l_waiting.extend(range(waiting))
    kind, wk = e.choose(1.0, budget)
    want = decide(budget, e.worker_views(), e.lambda_view(1.0))
    got = {INSTANCE: Route.WORKER, LAMBDA: Route.LAMBDA, REJECTED: Route.REJECT}[kind]
    assert got == want.route, want.reason
    assert (wk.instance_id if wk else None) == want.worker_id
    assert math.isfinite(budget)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"instance_types": ("x9.huge",)}, "instance_types"),
        ({"batching": {C5: (0, 0.0)}}, "batching"),
        ({"batching": {"m5.large": (1, 0.0)}}, "batching"),
        ({"initial_fleet": (("m5.large", "on-demand", 1),)}, "initial_fleet"),
        ({"lambda_": LambdaSettings(memory_mb=64)}, "memory_mb"),
        ({"queue_bound": 0}, "queue_bound"),
        ({"price_source": "gcp"}, "price_source"),
    ],
)
def test_a_bad_setup_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        setup(**change)


def test_zero_boot_lag_serves_at_once() -> None:
    """The oracle's setting: a launch with boot_seconds 0 serves from the step that launched it."""
    counts = np.full(120, 5)
    sim = run(counts, static_fleet(C5, 1), setup(boot_seconds={C5: 0.0}, lambda_=lambda_on()))
    _, _, route = per_request(sim)
    assert (route == INSTANCE).all()
    assert sim.result.series.booting == (0, 0)  # type: ignore[attr-defined]


def test_set_batching_applies_to_running_workers() -> None:
    """b = 1 until t = 60, then b = 4 with a 50 ms timeout: lone requests then wait the timeout."""
    s = setup(profiles={C5: det_profile(C5, [(1, 10.0), (4, 16.0)])}, initial_fleet=((C5, "on-demand", 1),))
    sim = run(np.full(120, 2), Scripted({60.0: [SetBatching(C5, 4, 50.0)]}), s)
    at, done, _ = per_request(sim)
    lat = (done - at) * 1000
    assert np.median(lat[at < 60]) == pytest.approx(10.0, abs=0.5)
    assert np.median(lat[at > 60]) == pytest.approx(60.0, abs=1.0)
