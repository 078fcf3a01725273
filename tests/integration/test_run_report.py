"""`mark run`'s report bills the replayed workload, not the compressed one: a Lambda invocation stands
for 1 / time_factor of them (as instances bill virtual seconds), and pre-warm pings are billed once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inference.repository import ModelRepository
from orchestrator.cloud.local.lambda_pool import LocalLambda, LocalLambdaConfig
from orchestrator.economics.catalog import load_catalog
from orchestrator.runtime.local_stack import StackConfig
from orchestrator.runtime.session import run_workload


def test_lambda_cost_is_scaled_by_the_time_factor_and_prewarm_is_billed(
    digits_repo: ModelRepository, tmp_path: Path
) -> None:
    model = "digits_mlp_small"
    function = LocalLambda(
        LocalLambdaConfig(models=[model], repository=str(digits_repo.root), concurrency_limit=2, log_dir=str(tmp_path))
    )
    config = StackConfig(
        models=(model,), repository=str(digits_repo.root), port=0, initial_instances=0, time_factor=0.1
    )
    report = asyncio.run(
        run_workload(config, [20.0] * 10, load_catalog(), function=function, lambda_prewarm=2, progress=False)
    )
    routed = report.lambda_share() * sum(len(r) for r in report.stats.by_second.values())
    assert report.stats.sent > 0 and report.lambda_share() == 1.0  # no instance: everything went to Lambda
    # 2 pings (billed once each) + every request sent, each standing for 10 of the replayed workload
    assert report.cost.lambda_invocations == 2 + round(10 * routed)
    per_million = report.cost.total_usd / report.virtual_requests * 1e6
    assert 0.2 < per_million < 2.0, per_million  # Lambda's price per request and GB-s, not a tenth of it
