"""The real controllers driven by the simulator (DESIGN.md §3 "Controller"): a spot notice leads to a
replacement and Lambda cover; a rise is met by launches ahead; every arrival is accounted for."""

from __future__ import annotations

import numpy as np

from orchestrator.controller.policies import build_controller
from orchestrator.economics.catalog import load_catalog
from orchestrator.sim.runner import LambdaSettings, SimSetup, simulate
from orchestrator.types import Slo

MODEL = "mobilenet_v2"
TYPES = ("c5.large", "c5.xlarge")


def setup(**kw: object) -> SimSetup:
    base: dict[str, object] = dict(
        model=MODEL,
        slo=Slo(),
        catalog=load_catalog(),
        instance_types=TYPES,
        lambda_=LambdaSettings(enabled=True, memory_mb=2048),
        seed=1,
        warm_start=True,
    )
    base.update(kw)
    return SimSetup(**base)  # type: ignore[arg-type]


def accounted(r) -> None:  # type: ignore[no-untyped-def]
    assert r.on_time + r.late + r.rejected == r.arrivals


def test_a_spot_notice_gets_a_replacement_in_another_pool_and_lambda_cover() -> None:
    counts = np.full(1800, 150)  # 150 req/s for 30 min: a few spot c5.large at capacity ~107 req/s each
    controller = build_controller("ours", model=MODEL, instance_types=TYPES, lambda_prewarm=0)
    # warm up 10 min, then one of the spot instances gets its 2-minute notice
    first = simulate(counts[:600], controller, setup())
    spot = [k for k, v in first.instance_hours.items() if k.endswith("/spot") and v > 0]
    assert spot, first.instance_hours  # ours runs on spot within the risk budget
    r = simulate(counts, controller, setup(spot_schedule=((600.0, "sim-00000001"),)))
    accounted(r)
    assert r.interruptions == 1
    after = [t for t in r.ticks if 600 <= t["at_s"] <= 720]
    actions = [a for t in after for a in t["actions"]]
    kinds = {a["action"] for a in actions}
    assert "Drain" in kinds and "Launch" in kinds, actions
    replacement = next(a for a in actions if a["action"] == "Launch")
    first_launch = next(a for t in r.ticks for a in t["actions"] if a["action"] == "Launch")  # sim-00000001's
    noticed_pool = (first_launch["instance_type"], first_launch["market"])
    assert noticed_pool[1] == "spot"
    assert (replacement["instance_type"], replacement["market"]) != noticed_pool, (replacement, noticed_pool)
    assert any(a["action"] == "Prewarm" and a["environments"] > 0 for a in actions), actions
    assert r.slo_attainment >= 0.99, r.summary()


def test_a_rise_is_met_by_launches_ahead_and_nothing_is_lost() -> None:
    # 20 min at 50 req/s, then 400 req/s: the forecaster sees the rise, the fleet follows, Lambda covers the boot
    counts = np.concatenate([np.full(1200, 50), np.full(1800, 400)])
    controller = build_controller("ours", model=MODEL, instance_types=TYPES)
    r = simulate(counts, controller, setup())
    accounted(r)
    launches = [a for t in r.ticks if t["at_s"] >= 1200 for a in t["actions"] if a["action"] == "Launch"]
    assert sum(a["count"] for a in launches) >= 2
    assert r.series.lambda_requests[20] > 0  # the minute of the rise: Lambda took what the fleet could not
    assert sum(r.series.lambda_requests[40:]) < sum(r.series.lambda_requests[20:25])  # and less once booted
    assert r.slo_attainment >= 0.99, r.summary()
