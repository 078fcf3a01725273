"""`mark run` with the live controller on loopback (orchestrator/runtime/session.py + controller/loop.py):
a short, time-compressed replay whose load rises from 5 to 40 req/s. Real worker processes, a real
local Lambda pool, the real front door and the real pure step (``ours``: milp, pre-warm from the plan).

What the test fixes so that the run is about the mechanism: pools of a small capacity (15 req/s per
instance, so the rise needs more instances on a 2-core machine), a Lambda priced above instances (so the
plan uses instances, Lambda covering the boot), and a forecaster that knows the replayed rates (the
true future; which forecaster is best is ``mark simulate``'s question, not this one's).
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from inference.repository import ModelRepository
from orchestrator.cloud.local.instances import InstanceTypeSpec
from orchestrator.cloud.local.lambda_pool import LocalLambda, LocalLambdaConfig
from orchestrator.controller.policies import build_controller
from orchestrator.economics.catalog import load_catalog
from orchestrator.policy.planning import ON_DEMAND, LambdaOption, PoolOption
from orchestrator.runtime.local_stack import StackConfig
from orchestrator.runtime.session import run_workload
from tests import fakes

pytestmark = pytest.mark.slow

EPOCH0 = 1_700_000_040.0  # calendar time of the replay's first second
RISE_AT = 80  # virtual second the load rises
RATES = [5.0] * RISE_AT + [40.0] * 50 + [5.0] * 60


def test_mark_run_with_the_controller_launches_ahead_of_the_rise_and_answers_everything(
    digits_repo: ModelRepository, tmp_path: Path
) -> None:
    model = "digits_mlp_small"
    catalog = load_catalog()
    boot_s = 20.0
    pool = PoolOption("c5.large", ON_DEMAND, catalog.price_usd_per_hour("c5.large", ON_DEMAND), boot_s, 15.0)
    controller = build_controller(
        "ours",
        model=model,
        instance_types=("c5.large",),
        markets=(ON_DEMAND,),
        pools=(pool,),
        lambda_fn=LambdaOption(usd_per_request=1e-4, concurrency_limit=2, latency_ms=5.0),
        forecaster=fakes.KnownFuture(RATES, EPOCH0),
        interval_s=10.0,
        horizon_steps=6,
        min_instances=1,
        max_instances=3,
        token_prefix="it-",
    )
    function = LocalLambda(
        LocalLambdaConfig(
            models=[model],
            repository=str(digits_repo.root),
            concurrency_limit=2,
            time_factor=0.1,
            log_dir=str(tmp_path),
        )
    )
    config = StackConfig(
        models=(model,),
        repository=str(digits_repo.root),
        port=0,
        initial_instances=1,
        time_factor=0.1,
        threads=1,
        types=(InstanceTypeSpec("c5.large", 1, boot_s),),
        max_instances=3,
    )
    log_path = tmp_path / "decisions.jsonl"
    report = asyncio.run(
        run_workload(
            config,
            RATES,
            catalog,
            function=function,
            progress=False,
            controller=controller,
            decision_log=log_path,
            epoch_at_start_s=EPOCH0,
        )
    )
    s = report.stats
    # every request answered: 200, or 503 with Retry-After; no connection error, no other 5xx
    assert s.sent > 0 and s.sent == s.ok + sum(s.errors.values())
    assert set(s.errors) <= {503} and s.no_retry_after == 0, s.errors
    ticks = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all("error" not in t for t in ticks), ticks
    launches = [(t["observed"]["epoch_s"] - EPOCH0, a) for t in ticks for a in t["actions"] if a["action"] == "Launch"]
    # at least one launch ahead of the rise, made because the forecast rose
    ahead = [(at, a) for at, a in launches if at < RISE_AT]
    assert ahead, launches
    assert report.control is not None and report.control.launched >= 1
    assert report.instances_launched == 1 + report.control.launched
    assert math.isclose(report.time_factor, 0.1)
    text = report.render()
    print(text)  # shown with -s: the run report of a controlled run
    assert "by the controller" in text and str(log_path) in text
