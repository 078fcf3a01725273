"""Capacity at SLO and cost per request for a model on every catalog type and market (``mark plan capacity``).

Joins the sources the planner needs per (instance type, market): the latency profile of the model on
that type (orchestrator/economics/latency_profiles.py: measured or estimated, and how), the pure batching policy
(orchestrator/policy/batching.py: best batch size and timeout, capacity at SLO), the worker's host CPU per
request (profiles/request_cpu/, measured by benchmarks/worker_request_cpu.py) and the catalog's prices
and boot times. Reads only committed files (profiles/), so it works without a model repository.

T(b) is inference only; a worker also parses, decodes and answers every request in one Python event
loop, h ms of host CPU each. So one worker answers at most 1000 / h req/s, and on a CPU type that work
takes core time from the inference slots: capacity = 1 / (1 / inference capacity + h / 1000 / slots),
capped at 1000 / h. On a GPU type only the cap applies. Without that term the digits models came out
at millions of req/s per instance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.economics.catalog import MARKETS, Catalog
from orchestrator.economics.latency_profiles import PROFILES_ROOT, TypeProfile, UnsupportedOnTypeError, profile_for
from orchestrator.policy.batching import DEFAULT_EPSILON_MS, BatchingPlan, plan_batching
from orchestrator.policy.planning import PoolOption

REQUEST_CPU_DIR = PROFILES_ROOT / "request_cpu"


@dataclass(frozen=True)
class CapacityRow:
    """One (type, market) for one model: the batching choice, capacity at SLO and its price per request."""

    instance_type: str
    market: str  # "on-demand" | "spot"
    usd_per_hour: float
    boot_seconds: float
    batch_size: int
    batch_timeout_ms: float
    capacity_rps: float  # requests/s one instance serves within the SLO, host CPU per request included
    usd_per_million: float  # usd_per_hour / 3600 / capacity_rps x 1e6
    source: str  # "measured" | "estimated": of the latency profile behind capacity_rps
    method: str  # how that profile was obtained or derived
    model: str
    slots: int
    inference_rps: float  # capacity at SLO from T(b) alone, before the host CPU per request
    request_cpu_ms: float | None  # host CPU per request outside onnxruntime; None: not measured

    def pool(self) -> PoolOption:
        """The planner's view of this row (``CapacityReport.pools`` gives them all)."""
        return PoolOption(self.instance_type, self.market, self.usd_per_hour, self.boot_seconds, self.capacity_rps)


def request_cpu_ms(model: str, request_cpu_dir: Path | None = None) -> float | None:
    """Measured host CPU per request of ``model`` (ms), or None when profiles/request_cpu has no figure."""
    path = (request_cpu_dir or REQUEST_CPU_DIR) / f"{model}.json"
    if not path.is_file():
        return None
    try:
        value = float(json.loads(path.read_text(encoding="utf-8"))["cpu_per_request_ms"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: no valid cpu_per_request_ms ({e})") from e
    if not value > 0:
        raise ValueError(f"{path}: cpu_per_request_ms must be > 0, got {value}")
    return value


def with_request_cpu(inference_rps: float, cpu_ms: float | None, slots: int, gpu: bool) -> float:
    """Capacity once the worker's host CPU per request is paid (see the module docstring)."""
    if cpu_ms is None:
        return inference_rps
    ceiling = 1000.0 / cpu_ms
    if gpu:
        return min(inference_rps, ceiling)
    return min(1.0 / (1.0 / inference_rps + cpu_ms / 1000.0 / slots), ceiling)


@dataclass(frozen=True)
class CapacityReport:
    """Feasible rows (cheapest per request first) and, per type left out, why."""

    model: str
    rows: tuple[CapacityRow, ...]
    skipped: tuple[tuple[str, str], ...]  # (instance_type, reason)

    def pools(self) -> tuple[PoolOption, ...]:
        """The planner's pools: every feasible (type, market) with its capacity at SLO."""
        return tuple(r.pool() for r in self.rows)


def capacity_report(
    model: str,
    catalog: Catalog,
    rt_max_ms: float,
    sl_min: float,
    epsilon_ms: float = DEFAULT_EPSILON_MS,
    *,
    types: Iterable[str] | None = None,
    profiles_dir: Path | None = None,
    request_cpu_dir: Path | None = None,
) -> CapacityReport:
    """Best (b, W) and capacity at SLO of ``model`` on each type, priced on-demand and spot."""
    names = list(types) if types is not None else catalog.known_types()
    rows: list[CapacityRow] = []
    skipped: list[tuple[str, str]] = []
    cpu_ms = request_cpu_ms(model, request_cpu_dir)
    plans: dict[tuple[tuple[tuple[int, float, float], ...], int], BatchingPlan] = {}
    for name in names:
        try:
            prof = profile_for(model, name, catalog, profiles_dir)
        except UnsupportedOnTypeError as e:
            skipped.append((name, e.reason))
            continue
        # Prices differ per type but the plan does not: solve once per (curve, slots), price per row.
        key = (prof.batches, prof.slots)
        if key not in plans:
            plans[key] = plan_batching(
                prof.service, rt_max_ms=rt_max_ms, sl_min=sl_min, usd_per_hour=1.0, epsilon_ms=epsilon_ms
            )
        plan = plans[key]
        if plan.best is None:
            skipped.append((name, plan.reason))
            continue
        for market in MARKETS:
            rows.append(_row(model, name, market, catalog, prof, plan, cpu_ms))
    rows.sort(key=lambda r: (r.usd_per_million, r.instance_type, r.market))
    return CapacityReport(model, tuple(rows), tuple(skipped))


def _row(
    model: str,
    name: str,
    market: str,
    catalog: Catalog,
    prof: TypeProfile,
    plan: BatchingPlan,
    cpu_ms: float | None,
) -> CapacityRow:
    assert plan.best is not None
    price = catalog.price_usd_per_hour(name, market)
    gpu = catalog.instance(name).gpu is not None
    cap = with_request_cpu(plan.best.capacity_rps, cpu_ms, prof.slots, gpu) if plan.best.capacity_rps > 0 else 0.0
    return CapacityRow(
        instance_type=name,
        market=market,
        usd_per_hour=price,
        boot_seconds=catalog.boot_seconds(name),
        batch_size=plan.best.batch_size,
        batch_timeout_ms=plan.best.batch_timeout_ms,
        capacity_rps=cap,
        usd_per_million=price / 3600.0 / cap * 1e6 if cap > 0 else math.inf,
        source=prof.source,
        method=prof.method,
        model=model,
        slots=prof.slots,
        inference_rps=plan.best.capacity_rps,
        request_cpu_ms=cpu_ms,
    )
