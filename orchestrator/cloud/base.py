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
from typing import Protocol

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


class InstanceNotFound(KeyError):
    """No instance with that id in this backend."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FunctionError(RuntimeError):
    """The function could not serve an invocation; ``status`` is what a client should see."""

    status = 502


class FunctionThrottled(FunctionError):
    """Every environment up to the concurrency limit is busy (AWS: 429 TooManyRequestsException)."""

    status = 429


@dataclass(frozen=True)
class FunctionResult:
    """One invocation, as the platform reports and bills it."""

    status: int
    body: bytes
    headers: dict[str, str]
    cold_start: bool
    init_ms: float  # the INIT phase of this invocation's cold start, 0 when warm
    duration_ms: float  # the handler's run time, as AWS reports Duration
    billed_duration_ms: int  # ceil(duration + init on a cold start)
    memory_mb: int


@dataclass(frozen=True)
class FunctionStats:
    environments: int
    busy: int
    idle: int
    invocations: int
    cold_starts: int
    throttles: int
    deaths: int
    billed_ms: int
    billed_gb_seconds: float
    memory_mb: int  # the function's configured memory


class FunctionBackend(Protocol):
    """The Lambda function as the front door and the runtime use it (the local pool, or AWS Lambda).

    ``invoke`` raises FunctionThrottled at the concurrency limit and FunctionError when an
    environment fails; every other outcome, HTTP errors included, is a FunctionResult.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def invoke(self, model: str, body: bytes, headers: dict[str, str]) -> FunctionResult: ...

    async def prewarm(self, count: int) -> int:
        """Start up to ``count`` environments ahead of traffic; returns how many are warm."""
        ...

    def stats(self) -> FunctionStats: ...

    def warm_idle(self) -> int: ...

    def concurrency_left(self) -> int: ...

    def concurrency_limit(self) -> int: ...

    def predicted_latency_ms(self, model: str, cold: bool) -> float: ...


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
