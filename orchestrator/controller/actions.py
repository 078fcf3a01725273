"""What a control step asks the cloud to do, as data (DESIGN.md §3 "Controller", step 4).

The mechanism (the simulator's ``SimCloud``, the local cloud, AWS) applies them; one that fails comes
back as an :class:`ActionFailure` in the next observation, never as an exception in the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.types import Market


@dataclass(frozen=True)
class Launch:
    """Start ``count`` instances of a type in a market. ``token`` is the idempotency token (EC2's
    ClientToken): the same token twice launches once."""

    instance_type: str
    market: Market
    count: int
    token: str


@dataclass(frozen=True)
class Drain:
    """Stop sending new work to an instance; it finishes its queue, then the next step terminates it."""

    instance_id: str


@dataclass(frozen=True)
class Terminate:
    """Terminate an instance that holds no work (drained, interrupted, or never served)."""

    instance_id: str


@dataclass(frozen=True)
class Prewarm:
    """Hold ``environments`` warm Lambda environments (local: warm processes; AWS: provisioned
    concurrency on an alias)."""

    environments: int


@dataclass(frozen=True)
class SetBatching:
    """The batch size and timeout workers of a type run with."""

    instance_type: str
    max_batch_size: int
    batch_timeout_ms: float


Action = Launch | Drain | Terminate | Prewarm | SetBatching


@dataclass(frozen=True)
class ActionFailure:
    """An action the cloud refused: ``reason`` is ``capacity``, ``quota``, ``throttled``, ``not_found``
    or ``error``; ``at_s`` on the cloud's clock."""

    action: Action
    reason: str
    message: str
    at_s: float


def action_json(action: Action) -> dict[str, Any]:
    """``{"action": "Launch", ...fields}``: one action as a decision-log record."""
    out: dict[str, Any] = {"action": type(action).__name__}
    for k, v in asdict(action).items():
        out[k] = v.value if isinstance(v, Market) else v
    return out
