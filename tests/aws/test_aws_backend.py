"""The registry's ``aws`` verbs: a deployment config turned into AWS objects (no call is made)."""

from __future__ import annotations

import pytest

from orchestrator.cloud import registry
from orchestrator.cloud.aws.cloud import AwsCloud
from orchestrator.cloud.aws.function import AwsFunction
from orchestrator.config import DeploymentConfig
from orchestrator.economics.catalog import load_catalog


def test_the_aws_backend_builds_the_function_the_types_and_the_cloud(aws_credentials: None) -> None:
    aws = registry.backend("aws")
    d = DeploymentConfig.model_validate(
        {
            "name": "shop",
            "fleet": {"instance_types": ["c5.large", "c5.xlarge"], "initial_type": "c5.xlarge"},
            "lambda": {"memory_mb": 1024, "concurrency": 5, "prewarm": 1},
            "backend": {"name": "aws", "region": "eu-west-1", "subnet_ids": ["subnet-1"]},
        }
    )
    fn = aws.open_function(d, "unused")
    assert isinstance(fn, AwsFunction)
    assert (fn.config.function_name, fn.config.alias, fn.config.memory_mb, fn.concurrency_limit()) == (
        "mark-shop",
        "live",
        1024,
        5,
    )
    assert fn.client.meta.region_name == "eu-west-1"
    types = aws.instance_types(d, load_catalog())
    assert [t.name for t in types] == ["c5.xlarge", "c5.large"] and types[0].threads == 2  # 4 vCPU = 2 cores
    cloud = aws.open_cloud(d, image_id="ami-12345678")
    assert isinstance(cloud, AwsCloud)
    assert cloud.config.instance_types == ("c5.xlarge", "c5.large") and cloud.ec2.settings.subnet_ids == ("subnet-1",)
    assert cloud.queue is None and cloud.instances() == []
    off = d.model_copy(update={"lambda_": d.lambda_.model_copy(update={"enabled": False})})
    assert aws.open_function(off, "unused") is None
    with pytest.raises(ValueError, match="not 'aws'"):
        aws.open_function(DeploymentConfig(), "unused")
