"""What to do on a spot interruption notice (DESIGN.md §3 "Spot"), pure.

AWS gives a spot instance a two-minute notice before it reclaims it. The response:

1. *drain* the noticed instance: no new work goes to it, it finishes its queue (the controller
   terminates it once its queue is empty, or AWS does at the end of the notice);
2. *replace* the capacity it took, in **another pool first**: the pool that is being reclaimed is the
   one most likely to be reclaimed again, so the replacement goes to the cheapest other pool that
   restores the lost capacity (another spot pool when spot is allowed, else on-demand); only when no
   other pool can be used, an on-demand instance of any type, and as the very last resort the noticed
   pool itself;
3. let *Lambda cover the gap* until the replacement has booted: the rate the noticed instances were
   serving becomes Lambda's, and by Little's law that needs ``rate x Lambda latency`` concurrent
   environments, which the controller pre-warms (capped at Lambda's concurrency limit).

Only what demand still needs is replaced: when the rest of the fleet covers the forecast, the
response drains and replaces nothing beyond what is missing (the planner decides the rest).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from orchestrator.policy.planning.problem import ON_DEMAND, SPOT, FleetInstance, LambdaOption, PoolOption


@dataclass(frozen=True)
class SpotResponse:
    """The decision on a set of notices.

    ``drain``: instance ids to drain; ``replacements``: ``(instance_type, market, count)`` launches;
    ``lost_rps``: capacity at SLO the noticed instances served (req/s); ``gap_rps``: the part of it
    Lambda must take until the replacements serve (req/s); ``lambda_environments``: warm Lambda
    environments that gap needs (Little's law, capped at the concurrency limit; 0 without Lambda).
    """

    drain: tuple[str, ...] = ()
    replacements: tuple[tuple[str, str, int], ...] = ()
    lost_rps: float = 0.0
    gap_rps: float = 0.0
    lambda_environments: int = 0


def replacement_pool(
    noticed: tuple[str, str],
    lost_rps: float,
    pools: Sequence[PoolOption],
    *,
    avoid: Collection[tuple[str, str]] = (),
    blocked: Collection[tuple[str, str]] = (),
    spot_allowed: bool = True,
) -> tuple[PoolOption, int] | None:
    """The pool and instance count that restore ``lost_rps`` req/s lost from pool ``noticed``.

    Preference: the cheapest cover (count x price per hour; ties: faster boot, then name) among pools
    other than ``noticed`` and ``avoid`` (pools with notices of their own) and not ``blocked`` (backed
    off after a failed launch), spot ones only if ``spot_allowed``; then any on-demand pool not blocked;
    then ``noticed`` itself. None when every pool is blocked or ``lost_rps`` is 0.
    """
    if lost_rps <= 0:
        return None

    def cover(p: PoolOption) -> tuple[PoolOption, int]:
        return p, max(1, math.ceil(lost_rps / p.capacity_rps - 1e-9))

    def cheapest(cands: list[PoolOption]) -> tuple[PoolOption, int] | None:
        if not cands:
            return None
        return min(
            (cover(p) for p in cands),
            key=lambda pc: (pc[1] * pc[0].usd_per_hour, pc[0].boot_seconds, pc[0].instance_type, pc[0].market),
        )

    usable = [p for p in pools if p.key not in blocked and (spot_allowed or p.market != SPOT)]
    others = [p for p in usable if p.key != noticed and p.key not in avoid]
    return (
        cheapest(others)
        or cheapest([p for p in usable if p.market == ON_DEMAND])
        or cheapest([p for p in usable if p.key == noticed])
    )


def respond_to_notices(
    noticed: Sequence[FleetInstance],
    pools: Sequence[PoolOption],
    lambda_fn: LambdaOption | None,
    *,
    demand_rps: float | None = None,
    serving_rps: float = 0.0,
    booting_rps: float = 0.0,
    blocked: Collection[tuple[str, str]] = (),
    spot_allowed: bool = True,
) -> SpotResponse:
    """Drain, replace and cover the instances in ``noticed`` (see the module docstring).

    ``noticed``: the instances with a notice not yet answered (``ready_in_s`` 0: serving, > 0: still
    booting, which loses no serving capacity now). ``demand_rps``: the rate to cover now (req/s; None:
    replace everything lost); ``serving_rps`` / ``booting_rps``: capacity of the *other* instances
    serving now / booting (req/s). Replaced per noticed pool: ``min(lost, demand - serving - booting)``;
    Lambda's gap: ``min(lost serving now, demand - serving)``.
    """
    if not noticed:
        return SpotResponse()
    caps = {p.key: p.capacity_rps for p in pools}
    by_pool: dict[tuple[str, str], float] = {}
    lost_serving = 0.0
    for f in noticed:
        cap = caps.get(f.key, 0.0)
        by_pool[f.key] = by_pool.get(f.key, 0.0) + cap
        if f.ready_in_s <= 0:
            lost_serving += cap
    lost = sum(by_pool.values())
    if demand_rps is None:
        missing, gap = lost, lost_serving
    else:
        missing = min(lost, max(0.0, demand_rps - serving_rps - booting_rps))
        gap = min(lost_serving, max(0.0, demand_rps - serving_rps))
    replacements: dict[tuple[str, str], int] = {}
    left = missing
    for key in sorted(by_pool, key=lambda k: (-by_pool[k], k)):  # the biggest loss first
        share = min(left, by_pool[key])
        left -= share
        choice = replacement_pool(key, share, pools, avoid=by_pool, blocked=blocked, spot_allowed=spot_allowed)
        if choice is not None:
            pool, n = choice
            replacements[pool.key] = replacements.get(pool.key, 0) + n
    envs = 0
    if lambda_fn is not None and lambda_fn.concurrency_limit > 0 and gap > 0:
        envs = min(lambda_fn.concurrency_limit, math.ceil(gap * lambda_fn.latency_ms / 1000.0 - 1e-9))
    return SpotResponse(
        drain=tuple(f.instance_id for f in noticed),
        replacements=tuple((ty, mk, n) for (ty, mk), n in sorted(replacements.items())),
        lost_rps=lost,
        gap_rps=gap,
        lambda_environments=envs,
    )
