"""Observe the live system (DESIGN.md §3 "Controller", step 1): an :class:`Observation` built from the
front door, the cloud and the Lambda function, with the simulator's conventions (``sim/runner.py``):

- ``now_s``: the step's whole second on the run's clock (the cloud's, virtual under a time factor);
  ``arrivals``: requests that arrived in each whole second since the previous step, oldest first, the
  last one the second that ended at ``now_s`` (the first step also gets ``history``: the trace before
  the window, and every second counted before the first step);
- under a time factor each request sent stands for ``weight = 1 / time_factor`` requests of the
  replayed workload (as ``mark run`` bills it), so arrivals and answers are counted in those units:
  the rates the planner compares with capacity at SLO are the workload's, not the compressed replay's;
- ``fleet``: every instance the cloud reports that is not terminated, with its spot notice, whether the
  controller drained it, requests outstanding on it (the front door's count), its launch token;
- ``lambda_warm``: idle warm environments; ``lambda_busy``: environments serving;
- ``requests`` / ``within_slo``: answers since the previous step (rejections included) and those
  within RTmax; ``failures``: the actions the mechanism could not apply since then.

All I/O of a step lives here and in ``controller/loop.py``; the step itself stays pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from orchestrator.cloud.base import Cloud, FunctionBackend
from orchestrator.controller.actions import ActionFailure
from orchestrator.controller.state import Observation, observed_fleet
from orchestrator.frontdoor.dispatcher import Dispatcher
from orchestrator.types import InstanceState


class ArrivalCounter:
    """Requests per whole second of a clock (``now``: seconds, e.g. the local cloud's virtual clock).

    :meth:`record` is the front door's hot path (one clock read, one dict increment); :meth:`take`
    hands the controller the completed seconds, each count times ``weight`` and rounded.

    Raises:
        ValueError: ``weight`` is not finite and > 0.
    """

    def __init__(self, now: Callable[[], float], weight: float = 1.0) -> None:
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {weight}")
        self.now = now
        self.weight = weight
        self.start_s = int(math.floor(now()))  # the first second counted
        self._next = self.start_s  # the first second not yet taken
        self._counts: dict[int, int] = {}
        self.total = 0  # requests recorded (unweighted)

    def record(self) -> None:
        """One request arrived now."""
        s = int(math.floor(self.now()))
        self._counts[s] = self._counts.get(s, 0) + 1
        self.total += 1

    def take(self, until_s: int) -> tuple[int, ...]:
        """Weighted counts of the seconds ``[first not taken, until_s)``, zeros included, oldest first;
        those seconds are not given again. A count for a second already taken (a late clock read) joins
        the first second given."""
        if until_s <= self._next:
            return ()
        late = sum(self._counts.pop(s) for s in [s for s in self._counts if s < self._next])
        raw = [self._counts.pop(s, 0) for s in range(self._next, until_s)]
        raw[0] += late
        self._next = until_s
        return tuple(int(round(n * self.weight)) for n in raw)


class ServingView(Protocol):
    """What the controller reads from and asks of the request path (the front door's dispatcher)."""

    def queued(self, instance_id: str) -> int:
        """Requests sent to the instance and not yet answered."""
        ...

    def answered(self) -> tuple[int, int]:
        """``(answers, of those within RTmax)`` since the start (rejections count as answers)."""
        ...

    def drain(self, instance_id: str) -> None:
        """Send no new work to the instance; what it holds finishes."""
        ...

    def set_batching(self, max_batch_size: int, batch_timeout_ms: float) -> None:
        """The batching every worker now runs with (what dispatch predicts completion times with)."""
        ...


class DispatcherView:
    """:class:`ServingView` over the front door's :class:`Dispatcher`."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def queued(self, instance_id: str) -> int:
        return self.dispatcher.outstanding.get(instance_id, 0)

    def answered(self) -> tuple[int, int]:
        slo = self.dispatcher.slo
        return slo.total, slo.total_within

    def drain(self, instance_id: str) -> None:
        self.dispatcher.draining.add(instance_id)

    def set_batching(self, max_batch_size: int, batch_timeout_ms: float) -> None:
        d = self.dispatcher
        d.config = replace(d.config, max_batch=max_batch_size, batch_timeout_ms=batch_timeout_ms)


class LiveObserver:
    """Builds each step's :class:`Observation` from the live system (see the module docstring).

    ``epoch0_s``: the calendar time (POSIX s) of second 0 of the run's clock (the forecaster's
    time-of-day features); ``history``: per-second arrivals before the window, given once, in the
    first observation (as the simulator's ``SimSetup.history``).
    """

    def __init__(
        self,
        cloud: Cloud,
        arrivals: ArrivalCounter,
        *,
        serving: ServingView | None = None,
        function: FunctionBackend | None = None,
        epoch0_s: float = 0.0,
        history: Sequence[int] = (),
    ) -> None:
        self.cloud = cloud
        self.arrivals = arrivals
        self.serving = serving
        self.function = function
        self.epoch0_s = epoch0_s
        self._history = tuple(int(x) for x in history)
        self._answered_seen = (0, 0)  # weighted cumulative (answers, within SLO) at the previous step
        self._first = True

    def observe(
        self,
        *,
        draining: frozenset[str] = frozenset(),
        tokens: Mapping[str, str] | None = None,
        failures: Sequence[ActionFailure] = (),
    ) -> Observation:
        """The observation now: ``draining`` (instances the controller drained), ``tokens`` (instance
        id -> launch token), ``failures`` (actions refused since the previous observation).

        Raises whatever the cloud's ``instances()`` raises (the loop turns it into a logged tick)."""
        now_s = int(math.floor(self.cloud.now()))
        arrivals = self.arrivals.take(now_s)
        if self._first:
            arrivals = self._history + arrivals
            self._first = False
        tokens = tokens or {}
        serving = self.serving
        fleet = observed_fleet(
            self.cloud.instances(),
            self.cloud.interruption_notices(),
            draining=lambda i: i.id in draining or i.state == InstanceState.DRAINING,
            queued=(lambda i: serving.queued(i)) if serving is not None else (lambda i: 0),
            token=lambda i: tokens.get(i, ""),
        )
        warm = busy = 0
        if self.function is not None:
            warm, busy = self.function.warm_idle(), self.function.stats().busy
        requests = within = 0
        if self.serving is not None:
            n, ok = self.serving.answered()
            w = self.arrivals.weight
            total = (int(round(n * w)), int(round(ok * w)))
            requests, within = total[0] - self._answered_seen[0], total[1] - self._answered_seen[1]
            self._answered_seen = total
        return Observation(
            now_s=float(now_s),
            epoch_s=self.epoch0_s + now_s,
            arrivals=arrivals,
            fleet=fleet,
            lambda_warm=warm,
            lambda_busy=busy,
            requests=requests,
            within_slo=within,
            failures=tuple(failures),
        )
