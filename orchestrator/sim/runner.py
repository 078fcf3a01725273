"""Run a controller over a trace on a virtual clock: ``simulate(counts, controller, setup) -> SimResult``.

The loop (DESIGN.md §3 "Controller", §6 ``sim/``): arrivals come from per-second counts, Poisson
within each second (given the count, the times are uniform in the second; seeded); the serving
model (``sim/engine.py``) dispatches and serves every request; ``SimCloud`` (``sim/cloud.py``) boots,
bills and interrupts instances; every ``controller.interval_s`` simulated seconds the runner builds
an :class:`~orchestrator.controller.state.Observation`, calls the controller's pure ``step`` and
applies the tick's actions through the cloud (a refused one comes back as an ``ActionFailure`` in
the next observation, never as an exception). Steps fall at t = 0, Δ, 2Δ, … (the first one, with no
arrivals yet, is where a controller launches its first fleet).

What ``SimResult`` holds and how each figure is made:

- ``on_time`` / ``late`` / ``rejected``: every arrival ends in exactly one (asserted);
  latencies are answer time - arrival time; ``latency_p50_ms`` / ``p99`` over answered requests
  (rejections left out); per-minute series by *arrival* minute;
- costs from the one ledger: instances billed from launch to termination (60 s minimum), still
  running ones up to the end of the window; Lambda per invocation (billed duration, memory);
- ``launches``: instances launched (``initial_fleet`` included); ``interruptions``: spot notices;
- ``Observation.lambda_warm``: idle warm environments; ``lambda_busy``: environments serving or in
  a prewarm cold start; ``requests`` / ``within_slo``: answers (rejections included) since the last
  step and those within RTmax; ``failures``: the previous tick's refused actions;
- ``MinuteSeries.fleet`` / ``booting``: sampled at the end of each minute; ``cost_usd``: the
  ledger's cumulative total then; ``forecast_rps``: the first forecast row (the next step) of the
  last step that began at or before the minute's start and whose step covers it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ec2_worker.discipline import DISPATCH_MARGIN_MS
from orchestrator.cloud.base import CapacityError, InstanceNotFound
from orchestrator.controller.actions import (
    Action,
    ActionFailure,
    Drain,
    Launch,
    Prewarm,
    SetBatching,
    Terminate,
)
from orchestrator.controller.state import Controller, Observation, observed_fleet
from orchestrator.economics.catalog import Catalog, UnknownInstanceTypeError, load_catalog
from orchestrator.economics.latency_profiles import TypeProfile, profile_for, single_thread_batches
from orchestrator.economics.ledger import CostLedger
from orchestrator.policy.batching import plan_batching
from orchestrator.sim.cloud import CloudEvent, PriceSource, SimCloud, pool_key
from orchestrator.sim.engine import INSTANCE, LAMBDA, REJECTED, LambdaModel, ServingModel, WorkerModel
from orchestrator.sim.results import MinuteSeries, SimResult
from orchestrator.types import InstanceState, Slo

PROGRESS_CALLS = 100  # progress() is called at most about this often


@dataclass(frozen=True)
class LambdaSettings:
    """The Lambda function in a simulated run. ``concurrency_limit`` None: the catalog's account default
    (1,000). The figures behind ``init_ms``, ``idle_ttl_s`` etc. are documented in ``sim/engine.py``."""

    enabled: bool = True
    memory_mb: int = 2048
    concurrency_limit: int | None = None
    init_ms: float = LambdaModel.init_ms
    platform_init_ms: float = LambdaModel.platform_init_ms
    idle_ttl_s: float = LambdaModel.idle_ttl_s
    keepalive_s: float = LambdaModel.keepalive_s
    architecture: str = "x86_64"
    batches: tuple[tuple[int, float, float], ...] | None = None  # (1, p50 ms, p99 ms) one warm request on
    # one vCPU; None: the model's measured single-thread profile


@dataclass(frozen=True)
class SimSetup:
    """Everything a simulated run needs besides the trace and the controller.

    - ``model``, ``slo``: what is served and the latency bound (deadline = arrival + RTmax);
    - ``instance_types``: the types a ``Launch`` may use (others fail as ``error``);
    - ``batching``: ``{type: (max_batch, batch_timeout_ms)}`` overriding the default, which is the best
      (b, W) of ``policy/batching.plan_batching`` on the type's profile (e.g. ``(8, 0.0)``: fixed batch,
      no timeout; ``(1, 0.0)``: no batching);
    - ``profiles``: ``{type: TypeProfile}`` overriding ``latency_profiles.profile_for`` (tests, what-ifs);
    - ``lambda_``: the Lambda function (enabled, memory, concurrency limit, …);
    - ``spot_hazard_per_hour``: interruptions per spot instance-hour by type (``"*"``: every type);
      ``spot_schedule``: scripted notices ``(at_s, instance id or type)``;
    - ``price_source``: ``"ec2"`` or ``"sagemaker"`` (the catalog's ml.* real-time price, on-demand only);
    - ``seed``: of arrivals, service times and spot draws (same seed, same result);
    - ``epoch0_s``: calendar time (POSIX s) of the trace's first second (``Observation.epoch_s``);
    - ``queue_bound``: outstanding requests per worker past which dispatch leaves it out (then 503);
    - ``initial_fleet``: ``(type, market, count)`` already running at t = 0 (billed from 0);
    - ``boot_seconds``: per-type override of the catalog's boot time (the oracle's zero boot lag);
    - ``max_instances``: the cloud's capacity (``CapacityError`` past it); None: unlimited;
    - ``history``: arrivals per second of the trace before the window, given to the controller in its
      first observation (what a controller running since before the window would have seen);
    - ``warm_start``: the instances the controller's first step launches are already running at
      t = 0 (a deployment live before the window, as ``history`` says), rather than booting then.
    """

    model: str
    slo: Slo = field(default_factory=Slo)
    catalog: Catalog = field(default_factory=load_catalog, repr=False)
    instance_types: tuple[str, ...] = ("c5.large",)
    batching: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    profiles: Mapping[str, TypeProfile] = field(default_factory=dict, repr=False)
    lambda_: LambdaSettings = field(default_factory=LambdaSettings)
    spot_hazard_per_hour: Mapping[str, float] = field(default_factory=dict)
    spot_schedule: tuple[tuple[float, str], ...] = ()
    price_source: PriceSource = "ec2"
    seed: int = 0
    epoch0_s: float = 0.0
    queue_bound: int = 256
    initial_fleet: tuple[tuple[str, str, int], ...] = ()
    boot_seconds: Mapping[str, float] = field(default_factory=dict)
    max_instances: int | None = None
    dispatch_margin_ms: float = DISPATCH_MARGIN_MS
    history: tuple[int, ...] = field(default=(), repr=False)  # arrivals per second before second 0
    warm_start: bool = False  # the first step's launches are already running at t = 0

    def __post_init__(self) -> None:
        """Refuse a setup that cannot run, naming the field (before any simulated second)."""
        known = self.catalog.instance_types
        if not self.instance_types:
            raise ValueError("instance_types: give at least one instance type")
        for t in self.instance_types:
            if t not in known:
                raise UnknownInstanceTypeError(
                    f"instance_types: unknown instance type {t!r}; the catalog knows: {', '.join(sorted(known))}"
                )
        for t, (b, w) in self.batching.items():
            if t not in self.instance_types:
                raise ValueError(f"batching[{t!r}]: not among instance_types ({', '.join(self.instance_types)})")
            if isinstance(b, bool) or not isinstance(b, int) or b < 1 or not (math.isfinite(w) and w >= 0):
                raise ValueError(f"batching[{t!r}]: need (batch size >= 1, timeout ms >= 0), got {(b, w)!r}")
        for t, market, count in self.initial_fleet:
            if t not in self.instance_types:
                raise ValueError(f"initial_fleet: {t!r} is not among instance_types ({', '.join(self.instance_types)})")
            if market not in ("on-demand", "spot") or count < 1:
                raise ValueError(
                    f"initial_fleet: need (type, 'on-demand'|'spot', count >= 1), got {(t, market, count)!r}"
                )
        mem = self.catalog.lambda_.memory_mb
        if not mem.min <= self.lambda_.memory_mb <= mem.max:
            raise ValueError(f"lambda_.memory_mb: must lie in {mem.min}..{mem.max} MB, got {self.lambda_.memory_mb}")
        if self.lambda_.concurrency_limit is not None and self.lambda_.concurrency_limit < 1:
            raise ValueError(f"lambda_.concurrency_limit: must be >= 1, got {self.lambda_.concurrency_limit}")
        if self.queue_bound < 1:
            raise ValueError(f"queue_bound: must be >= 1, got {self.queue_bound}")
        if self.price_source not in ("ec2", "sagemaker"):
            raise ValueError(f"price_source: must be 'ec2' or 'sagemaker', got {self.price_source!r}")

    def worker_models(self) -> dict[str, WorkerModel]:
        """Per allowed type: its profile and batching (default: plan_batching's best; infeasible: b=1)."""
        out: dict[str, WorkerModel] = {}
        for t in self.instance_types:
            prof = self.profiles.get(t) or profile_for(self.model, t, self.catalog)
            if t in self.batching:
                b, w = self.batching[t]
            else:
                plan = plan_batching(
                    prof.service,
                    rt_max_ms=self.slo.rt_max_ms,
                    sl_min=self.slo.sl_min,
                    usd_per_hour=self.catalog.price_usd_per_hour(t, "on-demand"),
                    epsilon_ms=self.slo.epsilon_ms,
                )
                b, w = (plan.best.batch_size, plan.best.batch_timeout_ms) if plan.best else (1, 0.0)
            out[t] = WorkerModel(t, prof.slots, prof.batches, int(b), float(w))
        return out

    def lambda_model(self) -> LambdaModel:
        s = self.lambda_
        batches = s.batches if s.batches is not None else single_thread_batches(self.model)[:1]
        limit = s.concurrency_limit
        if limit is None:
            limit = self.catalog.lambda_.default_concurrency.value
        return LambdaModel(
            enabled=s.enabled,
            memory_mb=s.memory_mb,
            concurrency_limit=limit,
            batches=batches,
            init_ms=s.init_ms,
            platform_init_ms=s.platform_init_ms,
            idle_ttl_s=s.idle_ttl_s,
            keepalive_s=s.keepalive_s,
            architecture=s.architecture,
        )


def arrival_times(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s, sorted) for per-second ``counts``: given a second's count, its arrivals are
    uniform in the second (so Poisson counts make a Poisson process)."""
    seconds = np.repeat(np.arange(len(counts), dtype=np.float64), counts)
    t = seconds + rng.random(len(seconds))
    t.sort()  # within a second only: the whole part already orders the seconds
    return t


def simulate(
    counts_per_second: np.ndarray,
    controller: Controller,
    setup: SimSetup,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Run ``controller`` over ``counts_per_second`` (requests arriving in each second, already scaled;
    shape ``[seconds]``) and return what happened. See :class:`Simulation` for the parts."""
    return Simulation(counts_per_second, controller, setup).run(progress)


class Simulation:
    """One run; after :meth:`run`, ``engine`` holds per-request outcomes (``engine.at``, ``done_s``,
    ``route``) for tests and deeper analysis."""

    def __init__(self, counts_per_second: np.ndarray, controller: Controller, setup: SimSetup) -> None:
        counts = np.asarray(counts_per_second)
        if counts.ndim != 1:
            raise ValueError(f"counts_per_second must be one-dimensional (per second), got shape {counts.shape}")
        if counts.size == 0:
            raise ValueError("counts_per_second is empty: nothing to simulate")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.round(counts)):
            raise ValueError("counts_per_second must hold whole numbers >= 0 (requests per second)")
        interval = float(controller.interval_s)
        if not (interval >= 1 and interval == int(interval)):
            raise ValueError(f"{controller.name}: interval_s must be a whole number of seconds >= 1, got {interval}")
        self.counts = counts.astype(np.int64)
        self.controller = controller
        self.setup = setup
        self.interval = int(interval)
        self.seconds = int(counts.size)
        self.models = setup.worker_models()
        rng = np.random.default_rng(setup.seed)
        self.ledger = CostLedger(setup.catalog)
        self.cloud = SimCloud(
            setup.catalog,
            ledger=self.ledger,
            price_source=setup.price_source,
            max_instances=setup.max_instances,
            spot_hazard_per_hour=setup.spot_hazard_per_hour,
            spot_schedule=setup.spot_schedule,
            seed=int(rng.integers(2**63)),
            boot_seconds=setup.boot_seconds,
        )
        self.engine = ServingModel(
            arrival_times(self.counts, rng),
            setup.slo.rt_max_ms,
            setup.lambda_model(),
            self.ledger,
            seed=int(rng.integers(2**63)),
            queue_bound=setup.queue_bound,
            dispatch_margin_ms=setup.dispatch_margin_ms,
        )
        self.notes: list[str] = []
        self.failures: list[ActionFailure] = []
        self.ticks: list[dict[str, Any]] = []

    # --- the loop ------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        wall0 = time.perf_counter()
        S, dt = self.seconds, self.interval
        minutes = math.ceil(S / 60)
        fleet_series: dict[str, list[int]] = {}
        booting = [0] * minutes
        cost = [0.0] * minutes
        forecast: list[tuple[float, ...]] = [()] * minutes
        quantiles: tuple[float, ...] = ()
        for itype, market, count in self.setup.initial_fleet:
            for inst in self.cloud.launch_now(itype, market, count, booted=True):
                self._serve(inst.id)
        state = self.controller.initial_state()
        last_step = 0
        seen_answered = seen_ok = 0
        next_step, next_minute, reported = 0, 60, -1
        while True:
            t = min(next_step, next_minute, S)
            cloud_t = self.cloud.next_event_s()
            if cloud_t < t:
                self.engine.run_until(cloud_t)
                for ev in self.cloud.advance(cloud_t):
                    self._on_cloud(ev)
                continue
            self.engine.run_until(t)
            for ev in self.cloud.advance(t):
                self._on_cloud(ev)
            if t == next_minute or t == S:
                m = (t - 1) // 60
                self.engine.maintain_lambda(t)
                self.engine.flush_lambda_billing()
                for wk in self.engine.serving():
                    key = pool_key(wk.instance_type, wk.market)
                    fleet_series.setdefault(key, [0] * minutes)[m] += 1
                booting[m] = sum(1 for i in self.cloud.instances() if i.state == InstanceState.PENDING)
                cost[m] = self.ledger.snapshot(t).total_usd
                next_minute += 60
            if t == S:
                break
            if t == next_step:
                answered, ok = self.engine.answered, self.engine.answered_ok
                obs = self._observe(t, last_step, answered - seen_answered, ok - seen_ok)
                seen_answered, seen_ok, last_step = answered, ok, t
                tick = self.controller.step(state, obs)
                state = tick.state
                self.ticks.append(tick.record())
                if tick.forecast:
                    quantiles = quantiles or tuple(tick.quantiles)
                    row = tuple(float(x) for x in tick.forecast[0])
                    for m in range(math.ceil(t / 60), min(minutes, math.ceil((t + dt) / 60))):
                        forecast[m] = row
                self.failures = self._apply(tick.actions, t)
                next_step += dt
            if progress is not None and int(100 * t / S) > reported:
                reported = int(100 * t / S)
                progress(t / S)
        self.engine.finish()
        self.engine.flush_lambda_billing()
        snap = self.ledger.snapshot(S)
        cost[-1] = snap.total_usd  # with the Lambda invocations of requests answered after the window
        if progress is not None:
            progress(1.0)
        series = self._minute_series(minutes, fleet_series, booting, cost, forecast, quantiles)
        return self._result(snap, series, time.perf_counter() - wall0)

    # --- the fleet -----------------------------------------------------------------------------

    def _serve(self, instance_id: str) -> None:
        inst = self.cloud.instance(instance_id)
        self.engine.add_worker(
            inst.id,
            self.models[inst.instance_type],
            inst.market.value,
            self.cloud.usd_per_hour(inst.instance_type, inst.market),
            self.cloud.now(),
        )

    def _on_cloud(self, ev: CloudEvent) -> None:
        if ev.kind == "ready":
            self._serve(ev.instance_id)
        elif ev.kind == "notice":
            self.engine.drain(ev.instance_id, ev.at_s)
        else:  # reclaimed: whatever it still held goes back to dispatch
            self.engine.kill(ev.instance_id, ev.at_s)

    def _observe(self, t: int, since: int, answered: int, ok: int) -> Observation:
        fleet = observed_fleet(
            self.cloud.instances(),
            self.cloud.interruption_notices(),
            draining=lambda i: self.cloud.is_draining(i.id),
            queued=self.engine.outstanding,
            token=self.cloud.token_of,
        )
        warm, busy = self.engine.lambda_counts(t)
        future_s = int(self.controller.future_s)
        return Observation(
            now_s=float(t),
            epoch_s=self.setup.epoch0_s + t,
            # the first step also sees the trace before the window (the forecaster's yesterday and last hour)
            arrivals=tuple(int(x) for x in (self.setup.history if t == 0 else ()))
            + tuple(int(x) for x in self.counts[since:t]),
            fleet=fleet,
            lambda_warm=warm,
            lambda_busy=busy,
            requests=answered,
            within_slo=ok,
            failures=tuple(self.failures),
            future_arrivals=tuple(int(x) for x in self.counts[t : t + future_s]) if future_s > 0 else None,
        )

    def _apply(self, actions: tuple[Action, ...], t: float) -> list[ActionFailure]:
        failed: list[ActionFailure] = []

        def fail(a: Action, reason: str, message: str) -> None:
            failed.append(ActionFailure(a, reason, message, float(t)))

        for a in actions:
            try:
                if isinstance(a, Launch):
                    if a.instance_type not in self.models:
                        fail(a, "error", f"{a.instance_type} is not among this run's instance types "
                             f"({', '.join(self.setup.instance_types)})")  # fmt: skip
                        continue
                    # the first step's launches are the fleet the deployment was already running when the
                    # window began (it was live before it): they serve from t = 0, billed from t = 0
                    first = t == 0 and self.setup.warm_start
                    launched = self.cloud.launch_now(a.instance_type, a.market, a.count, a.token or None, booted=first)
                    for inst in launched:
                        if inst.state == InstanceState.RUNNING and not self.engine.has_worker(inst.id):
                            self._serve(inst.id)  # zero boot time: serving at once
                elif isinstance(a, Drain):
                    self.cloud.drain(a.instance_id)
                    self.engine.drain(a.instance_id, t)
                elif isinstance(a, Terminate):
                    self.cloud.instance(a.instance_id)  # unknown -> not_found, before any effect
                    moved = self.engine.kill(a.instance_id, t)
                    if moved:
                        self.notes.append(
                            f"t={t:g} s: Terminate {a.instance_id} with {moved} requests on it; they were re-dispatched"
                        )
                    self.cloud.terminate_now([a.instance_id])
                elif isinstance(a, Prewarm):
                    if not self.setup.lambda_.enabled:
                        fail(a, "error", "Lambda is disabled in this run")
                        continue
                    self.engine.prewarm(a.environments, t)
                elif isinstance(a, SetBatching):
                    if a.instance_type not in self.models:
                        fail(a, "error", f"{a.instance_type} is not among this run's instance types")
                        continue
                    old = self.models[a.instance_type]
                    new = WorkerModel(old.instance_type, old.slots, old.batches, a.max_batch_size, a.batch_timeout_ms)
                    self.models[a.instance_type] = new
                    self.engine.set_batching(new, t)
            except CapacityError as e:
                fail(a, "capacity", str(e))
            except InstanceNotFound as e:
                fail(a, "not_found", str(e))
            except (ValueError, TypeError) as e:
                fail(a, "error", str(e))
        return failed

    # --- results -------------------------------------------------------------------------------

    def _minute_series(
        self,
        minutes: int,
        fleet: dict[str, list[int]],
        booting: list[int],
        cost: list[float],
        forecast: list[tuple[float, ...]],
        quantiles: tuple[float, ...],
    ) -> MinuteSeries:
        padded = np.zeros(minutes * 60, dtype=np.int64)
        padded[: self.seconds] = self.counts
        per_min = padded.reshape(minutes, 60)
        e = self.engine
        at = np.frombuffer(e.at, dtype=np.float64)
        done = np.frombuffer(e.done_s, dtype=np.float64)
        route = np.frombuffer(e.route, dtype=np.uint8)
        minute = (at // 60).astype(np.int64)
        lat_ms = (done - at) * 1000.0
        answered = route != REJECTED
        on_time = answered & (done - at <= e.rt_s)
        p50 = np.full(minutes, math.nan)
        p99 = np.full(minutes, math.nan)
        # Arrivals are sorted by time, so each minute's requests are one contiguous index range.
        bounds = np.searchsorted(at, np.arange(minutes + 1) * 60.0, "left")
        for m in range(minutes):
            chunk = lat_ms[bounds[m] : bounds[m + 1]][answered[bounds[m] : bounds[m + 1]]]
            if chunk.size:
                p50[m], p99[m] = np.quantile(chunk, [0.5, 0.99])
        return MinuteSeries(
            arrivals=tuple(int(x) for x in per_min.sum(axis=1)),
            peak_rps=tuple(float(x) for x in per_min.max(axis=1)),
            forecast_rps=tuple(forecast),
            quantiles=quantiles,
            fleet={k: tuple(v) for k, v in sorted(fleet.items())},
            booting=tuple(booting),
            lambda_requests=tuple(int(x) for x in np.bincount(minute[route == LAMBDA], minlength=minutes)),
            latency_p50_ms=tuple(float(x) for x in p50),
            latency_p99_ms=tuple(float(x) for x in p99),
            on_time=tuple(int(x) for x in np.bincount(minute[on_time], minlength=minutes)),
            cost_usd=tuple(cost),
        )

    def _result(self, snap: Any, series: MinuteSeries, wall_s: float) -> SimResult:
        e = self.engine
        at = np.frombuffer(e.at, dtype=np.float64)
        done = np.frombuffer(e.done_s, dtype=np.float64)
        route = np.frombuffer(e.route, dtype=np.uint8)
        if np.isnan(done).any():
            raise AssertionError(f"{int(np.isnan(done).sum())} requests never got an answer (a simulator bug)")
        answered = route != REJECTED
        on_time_mask = answered & (done - at <= e.rt_s)
        on_time = int(on_time_mask.sum())
        rejected = int((route == REJECTED).sum())
        late = int(answered.sum()) - on_time
        if on_time + late + rejected != e.n:
            raise AssertionError("on_time + late + rejected != arrivals (a simulator bug)")
        lat = (done[answered] - at[answered]) * 1000.0
        p50, p99 = (float(x) for x in np.quantile(lat, [0.5, 0.99])) if lat.size else (math.nan, math.nan)
        notes = list(self.notes)
        if e.redispatched:
            notes.append(f"{e.redispatched} requests re-dispatched from {e.killed_with_work} instances that went away")
        if e.l_cold_starts:
            notes.append(f"Lambda: {e.l_cold_starts} cold starts, {e.l_pings} keep-alive pings")
        return SimResult(
            policy=self.controller.name,
            seconds=self.seconds,
            arrivals=e.n,
            on_time=on_time,
            late=late,
            rejected=rejected,
            lambda_requests=int((route == LAMBDA).sum()),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            instance_usd=snap.instance_usd,
            lambda_usd=snap.lambda_usd,
            instance_hours=self.cloud.billed_hours(self.seconds),
            launches=self.cloud.launches,
            interruptions=self.cloud.notices_issued,
            wall_seconds=wall_s,
            series=series,
            ticks=tuple(self.ticks),
            notes=tuple(notes),
        )


__all__ = [
    "INSTANCE",
    "LAMBDA",
    "REJECTED",
    "LambdaSettings",
    "SimSetup",
    "Simulation",
    "arrival_times",
    "simulate",
]
