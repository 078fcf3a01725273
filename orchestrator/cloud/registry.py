"""Cloud backends by name (DESIGN.md §6): the one place that maps ``DeploymentConfig.backend.name`` to
the code that implements it, importing that code (and its SDK) only when it is chosen.

Each backend module offers the same verbs (SkyPilot's ``sky/provision`` pattern: each verb defined
once, routed by provider name):

- ``instance_types(deployment, catalog) -> tuple[InstanceTypeSpec, ...]``: the allowed types as this
  backend runs them;
- ``open_function(deployment, repository) -> FunctionBackend | None``: the burst function, or None
  when the deployment turns Lambda off.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module (imported, with its SDK, only when chosen: ``local`` never loads boto3).
BACKENDS: dict[str, str] = {"local": "orchestrator.cloud.local.backend", "aws": "orchestrator.cloud.aws.backend"}
PLANNED: dict[str, str] = {}  # names a config may carry whose code has not arrived yet


class BackendUnavailable(ValueError):
    """No backend of that name can run in this version; the message lists the ones that can."""


def backend(name: str) -> ModuleType:
    """The module implementing backend ``name``, imported now (not when this registry is imported).

    Raises:
        BackendUnavailable: ``name`` is not a backend, or not one this version can run.
    """
    if name not in BACKENDS:
        why = PLANNED.get(name, "no such backend")
        raise BackendUnavailable(f"backend.name {name!r}: {why}; this version runs: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])
