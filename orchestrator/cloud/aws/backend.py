"""The AWS backend's verbs for the registry (``orchestrator.cloud.registry``): a deployment config
turned into what runs on AWS.

Naming conventions the infrastructure stacks (CDK/Terraform) must follow, since the deployment file
does not name these resources: the Lambda function is ``mark-<deployment name>`` with alias ``live``;
launch templates are ``mark-<deployment>-<instance type>`` (created by ``ec2.py`` when missing).

IAM actions: those of the modules it opens (``ec2``, ``interruptions``, ``function``).
"""

from __future__ import annotations

from orchestrator.cloud.aws.cloud import AwsCloud, AwsCloudConfig
from orchestrator.cloud.aws.ec2 import LaunchSettings
from orchestrator.cloud.aws.function import AwsFunction, AwsFunctionConfig
from orchestrator.cloud.aws.session import AwsSession
from orchestrator.cloud.local.instances import InstanceTypeSpec
from orchestrator.config import AwsBackend, DeploymentConfig
from orchestrator.economics.catalog import Catalog

FUNCTION_ALIAS = "live"


def _aws(deployment: DeploymentConfig) -> AwsBackend:
    if not isinstance(deployment.backend, AwsBackend):
        raise ValueError(f"backend.name is {deployment.backend.name!r}, not 'aws'")
    return deployment.backend


def function_name(deployment: DeploymentConfig) -> str:
    """The Lambda function's name for a deployment: ``mark-<name>``."""
    return f"mark-{deployment.name}"


def instance_types(deployment: DeploymentConfig, catalog: Catalog) -> tuple[InstanceTypeSpec, ...]:
    """The deployment's allowed types, the initial type first: a worker on EC2 gets one onnxruntime
    thread per physical core (vCPU / 2) and the catalog's boot time.

    Raises:
        UnknownInstanceTypeError: a type is not in the catalog.
    """
    names = [deployment.fleet.initial] + [t for t in deployment.fleet.instance_types if t != deployment.fleet.initial]
    return tuple(InstanceTypeSpec(n, max(1, catalog.instance(n).vcpu // 2), catalog.boot_seconds(n)) for n in names)


def open_function(deployment: DeploymentConfig, repository: str) -> AwsFunction | None:
    """The deployment's Lambda function (None when ``lambda.enabled`` is false); ``repository`` is
    unused (the function loads its models from its package or S3).

    Raises:
        ValueError: the deployment's backend is not ``aws``.
    """
    backend = _aws(deployment)
    fn = deployment.lambda_
    if not fn.enabled:
        return None
    return AwsFunction(
        AwsFunctionConfig(function_name(deployment), FUNCTION_ALIAS, fn.memory_mb, fn.concurrency),
        AwsSession.from_backend(backend),
    )


def open_cloud(
    deployment: DeploymentConfig, *, image_id: str, interruption_queue_url: str | None = None, **launch: object
) -> AwsCloud:
    """An ``AwsCloud`` for the deployment (not yet refreshed: use ``await AwsCloud.adopt`` or
    ``refresh``). ``image_id`` is the worker AMI; ``launch`` more ``LaunchSettings`` fields.

    Raises:
        ValueError: the deployment's backend is not ``aws``.
    """
    backend = _aws(deployment)
    types = tuple(dict.fromkeys([deployment.fleet.initial, *deployment.fleet.instance_types]))
    settings = LaunchSettings(image_id=image_id, subnet_ids=tuple(backend.subnet_ids), **launch)  # type: ignore[arg-type]
    return AwsCloud(
        AwsCloudConfig(deployment.name, settings, types, interruption_queue_url),
        AwsSession.from_backend(backend),
    )
