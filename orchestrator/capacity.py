"""Capacity at SLO and cost per request for a model on every catalog type and market (``mark plan capacity``).

Joins the three sources the planner needs per (instance type, market): the latency profile of the model on
that type (orchestrator/model_profiles.py: measured or estimated, and how), the pure batching policy
(orchestrator/policy/batching.py: best batch size and timeout, capacity at SLO) and the catalog's prices
and boot times. Reads only committed files (profiles/), so it works without a model repository.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.catalog import MARKETS, Catalog
from orchestrator.model_profiles import TypeProfile, UnsupportedOnTypeError, profile_for
from orchestrator.policy.batching import DEFAULT_EPSILON_MS, BatchingPlan, plan_batching


@dataclass(frozen=True)
class CapacityRow:
    """One (type, market) for one model: the batching choice, capacity at SLO and its price per request."""

    instance_type: str
    market: str  # "on-demand" | "spot"
    usd_per_hour: float
    boot_seconds: float
    batch_size: int
    batch_timeout_ms: float
    capacity_rps: float  # requests/s one instance serves within the SLO
    usd_per_million: float  # usd_per_hour / 3600 / capacity_rps x 1e6
    source: str  # "measured" | "estimated": of the latency profile behind capacity_rps
    method: str  # how that profile was obtained or derived
    model: str
    slots: int


@dataclass(frozen=True)
class CapacityReport:
    """Feasible rows (cheapest per request first) and, per type left out, why."""

    model: str
    rows: tuple[CapacityRow, ...]
    skipped: tuple[tuple[str, str], ...]  # (instance_type, reason)


def capacity_report(
    model: str,
    catalog: Catalog,
    rt_max_ms: float,
    sl_min: float,
    epsilon_ms: float = DEFAULT_EPSILON_MS,
    *,
    types: Iterable[str] | None = None,
    profiles_dir: Path | None = None,
) -> CapacityReport:
    """Best (b, W) and capacity at SLO of ``model`` on each type, priced on-demand and spot."""
    names = list(types) if types is not None else catalog.known_types()
    rows: list[CapacityRow] = []
    skipped: list[tuple[str, str]] = []
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
            rows.append(_row(model, name, market, catalog, prof, plan))
    rows.sort(key=lambda r: (r.usd_per_million, r.instance_type, r.market))
    return CapacityReport(model, tuple(rows), tuple(skipped))


def capacity_table(
    model: str,
    catalog: Catalog,
    rt_max_ms: float,
    sl_min: float,
    epsilon_ms: float = DEFAULT_EPSILON_MS,
    *,
    types: Iterable[str] | None = None,
    profiles_dir: Path | None = None,
) -> list[CapacityRow]:
    """The feasible rows of :func:`capacity_report`, cheapest per request first (what the planner consumes)."""
    return list(
        capacity_report(model, catalog, rt_max_ms, sl_min, epsilon_ms, types=types, profiles_dir=profiles_dir).rows
    )


def _row(model: str, name: str, market: str, catalog: Catalog, prof: TypeProfile, plan: BatchingPlan) -> CapacityRow:
    assert plan.best is not None
    price = catalog.price_usd_per_hour(name, market)
    cap = plan.best.capacity_rps
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
    )
