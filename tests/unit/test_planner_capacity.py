"""The planner fed with capacities at SLO: batching decides where a GPU pays, and the committed profiles
(latency, host CPU per request, catalog) give the planner its pools."""

from __future__ import annotations

import math

import pytest

from orchestrator.economics.capacity import capacity_report, request_cpu_ms, with_request_cpu
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.policy.batching import ServiceProfile, plan_batching
from orchestrator.policy.planning import ON_DEMAND, SPOT, Plan, PoolOption, milp
from tests import fakes

# A CPU slot: 10 ms a request, batching does not pay (T(b) = b x T(1)).
CPU = ServiceProfile(((1, 10.0, 12.0), (2, 20.0, 24.0), (4, 40.0, 48.0)), slots=1)
# A GPU: 20 ms fixed per batch + 0.5 ms a row; p99 10 % above p50. Batching pays up to 64 rows.
GPU_BATCHED = ServiceProfile(tuple((b, 20 + 0.5 * b, (20 + 0.5 * b) * 1.1) for b in (1, 2, 4, 8, 16, 32, 64)), 1)
GPU_UNBATCHED = ServiceProfile(((1, 20.5, 22.55),), slots=1)  # the same GPU with max batch 1
CPU_PRICE, GPU_PRICE = 0.085, 0.526  # c5.large, g4dn.xlarge on-demand
SMALL_LAMBDA = fakes.lambda_option(concurrency_limit=2)  # 40 ms a request: 50 req/s at most


def pools(gpu: ServiceProfile, rt_max_ms: float) -> tuple[PoolOption, PoolOption]:
    cpu_plan = plan_batching(CPU, rt_max_ms=rt_max_ms, sl_min=0.98, usd_per_hour=CPU_PRICE)
    gpu_plan = plan_batching(gpu, rt_max_ms=rt_max_ms, sl_min=0.98, usd_per_hour=GPU_PRICE)
    assert cpu_plan.best is not None and gpu_plan.best is not None
    return (
        fakes.pool("c5.large", ON_DEMAND, cpu_plan.best.capacity_rps),
        fakes.pool("g4dn.xlarge", ON_DEMAND, gpu_plan.best.capacity_rps),
    )


def launches(plan: Plan) -> dict[str, int]:
    return {t: n for t, _, n in plan.launches}


def steady_fleet(plan: Plan) -> dict[str, int]:
    """The serving fleet once every launch has booted (CPUs boot a step before GPUs and bridge the gap)."""
    return {t: n for t, _, n in plan.serving_per_step[4] if n}


def sustained(ps: tuple[PoolOption, ...], rps: float, steps: int = 15) -> Plan:
    return milp(fakes.plan_input((rps,) * steps, pools=ps, lambda_fn=SMALL_LAMBDA, spot_cover=0.0))


def test_gpu_wins_only_where_batching_makes_it_cheaper_per_request() -> None:
    # RTmax 200 ms: a batch of 64 (52 ms) fits, the GPU serves ~1,180 req/s at SLO for 0.526 $/h:
    # ~0.12 $/1M against the CPU's ~0.27 $/1M. A sustained 2,400 req/s goes to GPUs.
    cpu, gpu = pools(GPU_BATCHED, 200.0)
    assert gpu.usd_per_hour / gpu.capacity_rps < cpu.usd_per_hour / cpu.capacity_rps
    plan = sustained((cpu, gpu), 2400.0)
    assert steady_fleet(plan)["g4dn.xlarge"] == 2
    assert steady_fleet(plan).get("c5.large", 0) <= 1  # the ~45 req/s two GPUs leave over
    assert plan.unserved_rps[1:] == (0.0,) * 14  # step 0: nothing is up yet, whatever the plan
    all_cpu = sustained((cpu,), 2400.0)
    assert plan.cost.instances_usd < 0.65 * all_cpu.cost.instances_usd  # incl. the CPUs that bridge the GPU boot

    # The same GPU without batching: one request per 20.5 ms, ~37 req/s at SLO, 3.9 $/1M. CPUs only.
    cpu, gpu = pools(GPU_UNBATCHED, 200.0)
    assert gpu.usd_per_hour / gpu.capacity_rps > 10 * cpu.usd_per_hour / cpu.capacity_rps
    plan = sustained((cpu, gpu), 2400.0)
    assert "g4dn.xlarge" not in launches(plan)
    assert steady_fleet(plan) == {"c5.large": math.ceil((2400 - SMALL_LAMBDA.max_rps) / cpu.capacity_rps)}

    # RTmax 40 ms: the batches that would pay (32 rows: 40 ms p99) no longer fit, the GPU's capacity at
    # SLO collapses; CPUs only again, although the hardware is the same.
    cpu, gpu = pools(GPU_BATCHED, 40.0)
    assert gpu.usd_per_hour / gpu.capacity_rps > cpu.usd_per_hour / cpu.capacity_rps
    assert "g4dn.xlarge" not in launches(sustained((cpu, gpu), 2400.0))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_pools_from_the_committed_profiles_and_the_load_decides_cpu_or_gpu(catalog: Catalog) -> None:
    ps = capacity_report("mobilenet_v2", catalog, 200.0, 0.98).pools()
    assert {p.key for p in ps} == {(t, m) for t in catalog.known_types() for m in (ON_DEMAND, SPOT)}
    assert len(catalog.known_types()) >= 12
    od = tuple(p for p in ps if p.market == ON_DEMAND)
    # 100 req/s: one small CPU instance; a GPU (the cheapest per request at full load) would idle.
    low = milp(fakes.plan_input((100.0,) * 15, pools=od, lambda_fn=SMALL_LAMBDA, spot_cover=0.0))
    assert [n for _, _, n in low.launches] == [1] and low.launches[0][0] in {"c5.large", "c6i.large"}
    # 5,000 req/s: GPUs carry it.
    high = milp(fakes.plan_input((5000.0,) * 15, pools=od, lambda_fn=SMALL_LAMBDA, spot_cover=0.0))
    gpu_types = {t for t in catalog.known_types() if catalog.instance(t).gpu is not None}
    cap = {p.instance_type: p.capacity_rps for p in od}
    assert sum(n * cap[t] for t, n in steady_fleet(high).items() if t in gpu_types) >= 0.8 * 5000


def test_host_cpu_per_request_bounds_capacity(catalog: Catalog) -> None:
    cpu_ms = request_cpu_ms("digits_mlp_large")
    assert cpu_ms is not None and 0.01 < cpu_ms < 5.0
    rows = capacity_report("digits_mlp_large", catalog, 200.0, 0.98).rows
    assert rows
    for r in rows:
        # T(b) alone gives the digits MLP hundreds of thousands of req/s; the event loop cannot answer that.
        assert r.inference_rps > 10 * r.capacity_rps
        assert r.capacity_rps <= 1000.0 / cpu_ms + 1e-9
        assert r.request_cpu_ms == cpu_ms
    # On a CPU type the host work shares the cores: capacity = 1 / (1/inference + h/slots).
    assert with_request_cpu(100.0, 1.0, slots=1, gpu=False) == pytest.approx(1 / (1 / 100 + 0.001))
    assert with_request_cpu(100.0, 1.0, slots=4, gpu=False) == pytest.approx(1 / (1 / 100 + 0.00025))
    assert with_request_cpu(5000.0, 1.0, slots=1, gpu=True) == 1000.0
    assert with_request_cpu(500.0, 1.0, slots=1, gpu=True) == 500.0
    assert with_request_cpu(500.0, None, slots=1, gpu=False) == 500.0


def test_request_cpu_file_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "m.json").write_text('{"cpu_per_request_ms": -1}')
    with pytest.raises(ValueError, match=r"m\.json: cpu_per_request_ms must be > 0"):
        request_cpu_ms("m", tmp_path)
    (tmp_path / "n.json").write_text("{}")
    with pytest.raises(ValueError, match=r"n\.json: no valid cpu_per_request_ms"):
        request_cpu_ms("n", tmp_path)
    assert request_cpu_ms("absent", tmp_path) is None
