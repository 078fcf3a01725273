"""The one interface every cloud backend implements (DESIGN.md §4).

The controller, the front door and the simulator only see this: instances with a state, an
endpoint and a launch time; a function to invoke; spot interruption notices. Times are seconds on
the backend's clock (the local backend's virtual clock runs ``1 / time_factor`` times faster than
the wall clock, so that a day of trace replays in minutes and costs are still counted in the
seconds the cloud would bill).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from orchestrator.types import InstanceState, Market


@dataclass(frozen=True)
class Instance:
    id: str
    instance_type: str
    market: Market
    state: InstanceState
    launched_at: float
    endpoint: str | None = None  # host:port once running
    ready_at: float | None = None
    terminated_at: float | None = None
    interruption_at: float | None = None  # when a spot notice said it will be reclaimed


@dataclass(frozen=True)
class InterruptionNotice:
    instance_id: str
    noticed_at: float
    terminate_at: float


class CapacityError(RuntimeError):
    """The backend cannot hold more instances (local: this machine's limit; AWS: capacity/quotas)."""


class Cloud(abc.ABC):
    @abc.abstractmethod
    def now(self) -> float:
        """Seconds on this backend's clock (virtual for the local backend)."""

    @abc.abstractmethod
    async def launch(self, instance_type: str, market: Market, count: int = 1) -> list[Instance]: ...

    @abc.abstractmethod
    async def terminate(self, instance_ids: list[str]) -> None: ...

    @abc.abstractmethod
    def instances(self) -> list[Instance]:
        """Every instance this backend knows, terminated ones included (DESIGN.md calls it list())."""

    @abc.abstractmethod
    def interruption_notices(self) -> list[InterruptionNotice]: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything this backend started (processes, connections)."""
