"""The local backend's verbs for the registry: a deployment config turned into what the embedded
emulation runs (worker processes with this machine's threads, a pool of Lambda handler processes)."""

from __future__ import annotations

import os

from orchestrator.cloud.local.instances import InstanceTypeSpec, local_threads, machine_instance_cap
from orchestrator.cloud.local.lambda_pool import LocalLambda, LocalLambdaConfig
from orchestrator.config import DeploymentConfig, LocalBackend
from orchestrator.economics.catalog import Catalog


def _local(deployment: DeploymentConfig) -> LocalBackend:
    if not isinstance(deployment.backend, LocalBackend):
        raise ValueError(f"backend.name is {deployment.backend.name!r}, not 'local'")
    return deployment.backend


def type_specs(catalog: Catalog, names: list[str], max_threads: int | None = None) -> tuple[InstanceTypeSpec, ...]:
    """Each type as a local instance runs it: one onnxruntime thread per physical core (vCPU / 2, at
    most ``max_threads`` and this machine's cores) and the catalog's boot time.

    Raises:
        UnknownInstanceTypeError: a type is not in the catalog.
    """
    return tuple(
        InstanceTypeSpec(n, local_threads(catalog.instance(n).vcpu, max_threads), catalog.boot_seconds(n))
        for n in names
    )


def instance_types(deployment: DeploymentConfig, catalog: Catalog) -> tuple[InstanceTypeSpec, ...]:
    """The deployment's allowed types, the initial type first (the front door's profile layout)."""
    names = [deployment.fleet.initial] + [t for t in deployment.fleet.instance_types if t != deployment.fleet.initial]
    # default cap: half this machine's cores, leaving room for the local Lambda and the front door
    cap = _local(deployment).instance_threads or max(1, (os.cpu_count() or 2) // 2)
    return type_specs(catalog, names, cap)


def problems_with(deployment: DeploymentConfig) -> list[tuple[str, str]]:
    """What this machine cannot run of the deployment: ``(field path, message)`` pairs."""
    cap = machine_instance_cap()
    if deployment.fleet.initial_instances > cap:
        return [
            (
                "fleet.initial_instances",
                f"{deployment.fleet.initial_instances} instances: the local backend runs at most {cap} on this "
                "machine (its memory and cores)",
            )
        ]
    return []


def open_function(deployment: DeploymentConfig, repository: str) -> LocalLambda | None:
    """The local Lambda pool for the deployment's ``lambda`` section (None when disabled); not started."""
    fn = deployment.lambda_
    if not fn.enabled:
        return None
    return LocalLambda(
        LocalLambdaConfig(
            models=list(deployment.models),
            repository=repository,
            memory_mb=fn.memory_mb,
            concurrency_limit=fn.concurrency,
            time_factor=_local(deployment).time_factor,
            max_batch_size=deployment.batching.max_batch_size,
        )
    )
