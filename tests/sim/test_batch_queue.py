"""The batching policy's analytic capacity at SLO against its referee, an exact discrete-event simulation
of the worker's own discipline (orchestrator/sim/batch_queue.py running ec2_worker/discipline.py:
Poisson arrivals, FIFO, ``slots`` servers, dispatch when b wait, the oldest has waited W, or waiting
longer would miss a deadline; lognormal service matching the profile's p50/p99), with a fixed seed and
common random numbers across rates."""

from __future__ import annotations

import math
from typing import Any

import pytest

from orchestrator.policy.batching import ServiceProfile, capacity_at_slo, plan_batching
from orchestrator.sim.batch_queue import capacity_by_simulation, simulate
from tests.fakes import DIGITS, EPS, GPU, GPU_HEAVY, MOBILENET, SL, Batches


def _sim_capacity(batches: Batches, slots: int, b: int, w: float, rt: float, around: float) -> float:
    return capacity_by_simulation(
        batches,
        slots=slots,
        max_batch=b,
        batch_timeout_ms=w,
        rt_max_ms=rt - EPS,  # the simulation is the worker alone; eps is the network/dispatch margin
        sl_min=SL,
        requests=30_000,
        seed=1,
        rel_tol=0.02,
        bracket_rps=(around / 1.5, around * 1.5),
    )


def _sim_quantile(batches: Batches, slots: int, b: int, w: float, rate: float) -> float:
    r = simulate(batches, slots=slots, max_batch=b, batch_timeout_ms=w, rate_rps=rate, requests=40_000, seed=2)
    return r.latency_quantile_ms


# (name, profile, slots, RTmax): the best (b, W) the policy picks is checked against the simulation.
BEST_CASES = [
    ("digits", DIGITS, 1, 200.0),
    ("mobilenet", MOBILENET, 1, 200.0),
    ("mobilenet", MOBILENET, 2, 200.0),
    ("mobilenet", MOBILENET, 1, 100.0),
    ("gpu", GPU, 1, 200.0),
    ("gpu-heavy", GPU_HEAVY, 1, 200.0),
    ("gpu-heavy", GPU_HEAVY, 2, 100.0),
]


@pytest.mark.parametrize("name,batches,slots,rt", BEST_CASES, ids=[f"{c[0]}-s{c[2]}-rt{c[3]:g}" for c in BEST_CASES])
def test_best_capacity_matches_simulation(name: str, batches: Batches, slots: int, rt: float) -> None:
    plan = plan_batching(ServiceProfile(batches, slots), rt_max_ms=rt, sl_min=SL, usd_per_hour=1.0, epsilon_ms=EPS)
    best = plan.best
    assert best is not None
    sim = _sim_capacity(batches, slots, best.batch_size, best.batch_timeout_ms, rt, best.capacity_rps)
    assert best.capacity_rps == pytest.approx(sim, rel=0.20), (name, best, sim)
    # Loaded at the analytic capacity, the simulated worker still meets the SLO (15% tolerance).
    q = _sim_quantile(batches, slots, best.batch_size, best.batch_timeout_ms, best.capacity_rps)
    assert q + EPS <= rt * 1.15, (name, best, q)


# Settings with a positive batch timeout, where requests do wait for partners.
TIMEOUT_CASES = [
    (MOBILENET, 1, 8, 20.0, 200.0),
    (GPU, 2, 32, 30.0, 200.0),
    (GPU_HEAVY, 1, 16, 40.0, 200.0),
]


@pytest.mark.parametrize("batches,slots,b,w,rt", TIMEOUT_CASES, ids=["mobilenet-b8", "gpu-b32-s2", "gpu-heavy-b16"])
def test_capacity_with_batch_timeout_matches_simulation(
    batches: Batches, slots: int, b: int, w: float, rt: float
) -> None:
    profile = ServiceProfile(batches, slots)
    assert w + profile.p99_ms(b) + EPS <= rt
    cap = capacity_at_slo(profile, batch_size=b, batch_timeout_ms=w, rt_max_ms=rt, sl_min=SL, epsilon_ms=EPS)
    sim = _sim_capacity(batches, slots, b, w, rt, cap)
    assert cap == pytest.approx(sim, rel=0.20)
    assert _sim_quantile(batches, slots, b, w, cap) + EPS <= rt * 1.15


def test_simulator_matches_pollaczek_khinchine() -> None:
    """The referee itself: M/D/1 (b = 1, deterministic 10 ms) at utilization 0.5 has mean latency 15 ms."""
    r = simulate(((1, 10.0, 10.0),), slots=1, max_batch=1, batch_timeout_ms=0.0, rate_rps=50.0, requests=40_000)
    assert r.latency_mean_ms == pytest.approx(10.0 + 0.5 * 10.0 / (2 * 0.5), rel=0.05)
    assert r.utilization == pytest.approx(0.5, rel=0.05)


def test_simulator_holds_a_lone_request_for_the_timeout() -> None:
    # About one request a minute: it finds no partner, waits W = 30 ms, then a batch of 1 takes 5 ms.
    r = simulate(
        ((1, 5.0, 5.0), (4, 8.0, 8.0)),
        slots=1,
        max_batch=4,
        batch_timeout_ms=30.0,
        rate_rps=0.02,
        requests=50,
        quantile=0.5,
    )
    assert r.latency_quantile_ms == pytest.approx(35.0, abs=1e-6)


PROFILE = ((1, 5.0, 5.0), (4, 8.0, 8.0))  # deterministic service: 5 ms alone, 8 ms for 4


def test_the_simulation_sends_a_lone_request_before_its_deadline() -> None:
    """About one request a minute, W = 30 ms but a 20 ms deadline: the deadline rule sends each request
    at arrival + 20 - predicted service - 1 ms margin. The first, with nothing observed yet, goes at
    19 ms (latency 24); the rest at 14 ms (latency 19), as the worker would."""
    kw: dict[str, Any] = {"slots": 1, "max_batch": 4, "batch_timeout_ms": 30.0, "rate_rps": 0.02, "requests": 50}
    r = simulate(PROFILE, quantile=0.5, deadline_ms=20.0, dispatch_margin_ms=1.0, warmup_fraction=0.0, **kw)
    assert r.batches_by_reason == {"deadline": 50}
    assert r.latency_quantile_ms == pytest.approx(19.0, abs=1e-6)
    assert r.latency_mean_ms == pytest.approx((24.0 + 49 * 19.0) / 50, abs=1e-6)
    # without a deadline the same requests wait the whole timeout (the default: no deadline)
    r = simulate(PROFILE, quantile=0.5, warmup_fraction=0.0, **kw)
    assert r.batches_by_reason == {"timeout": 50}
    assert r.latency_quantile_ms == pytest.approx(35.0, abs=1e-6)


def test_capacity_by_simulation_gives_each_request_the_slo_bound_as_its_deadline() -> None:
    """A timeout longer than the SLO allows (W 30 ms, RTmax 25 ms): without the deadline rule every lone
    request is late, so nothing passes; with it (the default, deadline = RTmax) requests go in time."""
    kw: dict[str, Any] = {"slots": 1, "max_batch": 4, "batch_timeout_ms": 30.0, "sl_min": 0.9, "requests": 2000}
    assert capacity_by_simulation(PROFILE, rt_max_ms=25.0, deadline_ms=math.inf, **kw) == 0.0
    assert capacity_by_simulation(PROFILE, rt_max_ms=25.0, **kw) > 0.0
