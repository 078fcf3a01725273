"""What to do on a spot notice (orchestrator/policy/spot.py): drain, replace in another pool first, and
size Lambda's cover by Little's law."""

from __future__ import annotations

from orchestrator.policy.planning import ON_DEMAND, SPOT, FleetInstance
from orchestrator.policy.spot import replacement_pool, respond_to_notices
from tests import fakes

C5_SPOT = fakes.pool("c5.large", SPOT, 100.0)
C5X_SPOT = fakes.pool("c5.xlarge", SPOT, 200.0)
M5_SPOT = fakes.pool("m5.large", SPOT, 100.0)
C5 = fakes.pool("c5.large", ON_DEMAND, 100.0)
POOLS = (C5_SPOT, C5X_SPOT, M5_SPOT, C5)
LAMBDA = fakes.lambda_option(concurrency_limit=50, latency_ms=40.0)


def noticed(*keys: tuple[str, str], ready_in_s: float = 0.0) -> tuple[FleetInstance, ...]:
    return tuple(FleetInstance(f"n-{i}", t, m, ready_in_s, 0.0, True) for i, (t, m) in enumerate(keys))


def test_replacement_goes_to_the_cheapest_other_pool() -> None:
    r = respond_to_notices(noticed(C5_SPOT.key), POOLS, LAMBDA)
    assert r.drain == ("n-0",)
    (repl,) = r.replacements
    assert repl[:2] != C5_SPOT.key and repl[2] >= 1
    # the cheapest cover of 100 req/s outside c5.large spot, by the catalog's prices
    cheapest = min((p for p in POOLS if p.key != C5_SPOT.key), key=lambda p: p.usd_per_hour)
    assert repl == (cheapest.instance_type, cheapest.market, 1)


def test_without_spot_or_with_other_pools_blocked_on_demand_then_the_same_pool() -> None:
    (repl,) = respond_to_notices(noticed(C5_SPOT.key), POOLS, LAMBDA, spot_allowed=False).replacements
    assert repl == ("c5.large", ON_DEMAND, 1)
    blocked = {C5X_SPOT.key, M5_SPOT.key}
    (repl,) = respond_to_notices(noticed(C5_SPOT.key), POOLS, LAMBDA, blocked=blocked).replacements
    assert repl == ("c5.large", ON_DEMAND, 1)
    assert replacement_pool(C5_SPOT.key, 100.0, (C5_SPOT,)) == (C5_SPOT, 1)  # the last resort
    assert replacement_pool(C5_SPOT.key, 100.0, (C5_SPOT,), blocked={C5_SPOT.key}) is None


def test_pools_with_notices_of_their_own_are_avoided() -> None:
    r = respond_to_notices(noticed(C5_SPOT.key, M5_SPOT.key), POOLS, LAMBDA)
    assert all(key[:2] not in (C5_SPOT.key, M5_SPOT.key) for key in r.replacements)
    assert sum(n * (200.0 if t == "c5.xlarge" else 100.0) for t, _, n in r.replacements) >= 200.0


def test_lambda_covers_the_gap_by_littles_law() -> None:
    r = respond_to_notices(noticed(C5_SPOT.key, C5_SPOT.key), POOLS, LAMBDA)
    assert r.lost_rps == 200.0 and r.gap_rps == 200.0
    assert r.lambda_environments == 8  # 200 req/s x 0.040 s
    small = fakes.lambda_option(concurrency_limit=3, latency_ms=40.0)
    assert respond_to_notices(noticed(C5_SPOT.key), POOLS, small).lambda_environments == 3  # capped
    assert respond_to_notices(noticed(C5_SPOT.key), POOLS, None).lambda_environments == 0  # no Lambda
    booting = respond_to_notices(noticed(C5_SPOT.key, ready_in_s=30.0), POOLS, LAMBDA)
    assert booting.gap_rps == 0.0 and booting.lambda_environments == 0 and booting.replacements


def test_only_what_demand_still_needs_is_replaced() -> None:
    covered = respond_to_notices(noticed(C5_SPOT.key), POOLS, LAMBDA, demand_rps=150.0, serving_rps=200.0)
    assert covered.drain == ("n-0",) and covered.replacements == () and covered.lambda_environments == 0
    part = respond_to_notices(noticed(C5_SPOT.key), POOLS, LAMBDA, demand_rps=250.0, serving_rps=200.0)
    assert part.gap_rps == 50.0 and part.lambda_environments == 2
    waiting = respond_to_notices(
        noticed(C5_SPOT.key), POOLS, LAMBDA, demand_rps=250.0, serving_rps=200.0, booting_rps=100.0
    )
    assert waiting.replacements == () and waiting.gap_rps == 50.0  # a booting instance covers it later
    assert respond_to_notices((), POOLS, LAMBDA).drain == ()
