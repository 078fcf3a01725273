"""What one control step does (DESIGN.md §3 "Controller"): ``step(state, observation, context) -> Tick``.

Pure: no clock (time comes in the observation), no I/O, no randomness; the inputs are not changed and
the same inputs give the same ``Tick`` (state included). The simulator calls it on a virtual clock,
the live loop on the wall clock. Every Δ (``StepContext.interval_s``, 60 s by default):

1. *observe*: the arrivals of the seconds not seen before (an observation seen twice adds nothing)
   join the per-second history (the last ``HISTORY_MINUTES`` x 60 s, a read-only array; missing
   seconds are NaN); failed actions, launches that appeared and instances that went are folded
   into the book of what was asked (``reconcile.fold``). The first observation may carry any amount of
   history (e.g. the trace's previous day): the forecaster's seasonal inputs need a day;
2. *forecast*: quantiles of the per-second peak rate for each of the next steps
   (``controller/forecasting.py``: the online-calibrated LSTM, a static forecaster, MArk's running max
   or the oracle's true future), mapped from one-minute steps onto Δ;
3. *spot*: instances with an interruption notice are drained and replaced in another pool first, and
   Lambda is pre-warmed for the gap (``policy/spot.py``); the replacements count as booting capacity
   in the plan;
4. *plan*: ``PlanInput`` from the chosen forecast quantile per step, the fleet (booting instances with
   the seconds left to their readiness, pending launches as booting), the pools not backed off, Lambda;
   the configured planner (``milp``, ``mark_greedy``, ``oracle``);
5. *reconcile* (``controller/reconcile.py``): launches, drains, terminations, pre-warm, batching;
6. *record*: the ``Tick`` (observed summary, forecast, plan summary, expected cost, actions).

Two special shapes of the same step: a *fixed fleet* (``StepContext.fixed_fleet``: launched at the
first step, never changed: ``static-peak``) and *no pools* (Lambda only).

*Zero boot lag* (``StepContext.zero_boot_lag``, the oracle's ``oracle_boot="zero"``): for a simulator
that boots this policy's instances at once (``SimSetup.boot_seconds`` 0 per type, which
``StepController.boot_seconds`` then says): the plan is made with boot 0 and every instance counts as
serving, so plan and simulator agree. With the simulator's real boot, a policy plans with the real
boot instead (the default): a plan with boot 0 would count on capacity a boot too early.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from orchestrator.controller.actions import Launch, SetBatching
from orchestrator.controller.forecasting import ForecastInputs, ForecastSource, TrueFuture
from orchestrator.controller.reconcile import (
    Book,
    Desired,
    Limits,
    Reconciled,
    active_count,
    active_members,
    fold,
    issue_launches,
    reconcile,
)
from orchestrator.controller.state import FleetMember, Observation, Tick
from orchestrator.policy.planning import FleetInstance, LambdaOption, Plan, PlanInput, PoolOption
from orchestrator.policy.planning.mark_greedy import greedy_counts
from orchestrator.policy.spot import SpotResponse, respond_to_notices
from orchestrator.types import InstanceState
from predictor.features import HISTORY_MINUTES

HISTORY_SECONDS = HISTORY_MINUTES * 60  # the most any forecaster looks back (25 h)

Planner = Callable[[PlanInput], Plan]


@dataclass(frozen=True)
class StepContext:
    """Everything a step needs that is not state or observation: one named policy's configuration.

    - ``pools``: the (type, market) pools it may use, with capacity at SLO (req/s) and price;
    - ``lambda_fn``: Lambda as the planner sees it; ``lambda_enabled`` False plans with no Lambda
      (concurrency 0) and pre-warms nothing;
    - ``planner`` (None: no planning: a fixed fleet or Lambda only) and its ``planner_name``;
    - ``forecaster`` (None: no forecast) and ``quantile``: which of its quantiles the plan covers;
    - ``interval_s`` (Δ, s), ``horizon_steps`` (steps the plan looks ahead);
    - ``min_instances`` / ``max_instances``: the fleet's bounds (active instances + pending launches;
      draining and noticed ones do not count);
    - ``prewarm_from_plan``: hold the plan's Lambda pre-warm (``Plan.lambda_prewarm``) and the spot gap's;
      ``prewarm_floor``: environments held warm at least; ``prewarm_steps``: the plan's pre-warm look-ahead;
    - ``spot_allowed``: spot replacements allowed (the pools already say which markets exist);
      ``spot_cover``: the planner's spot risk budget (0: off);
    - ``min_billed_seconds``: EC2's minimum billing per launch (60 s);
    - ``recent_plans``: k, MArk's scale-in hysteresis (keep at least what the last k plans needed; 0: off);
      ``launch_overhead_s`` / ``greedy_markets``: ``mark_greedy``'s launch overhead and markets;
    - ``zero_boot_lag``: plan with boot 0, for a simulator that boots at once (see the module docstring);
    - ``fixed_fleet``: ``(type, market, count)`` to hold from the first step on, never changed;
    - ``batching``: ``SetBatching`` actions sent once, at the first step;
    - ``backoff_s``: how long a pool is avoided after a launch failed for capacity or quota;
      ``pending_timeout_s``: a launch not seen after boot + this is taken as lost;
    - ``token_prefix``: prefixes every launch token (the live loop: the deployment and its start).
    """

    pools: tuple[PoolOption, ...]
    lambda_fn: LambdaOption
    planner: Planner | None
    planner_name: str
    forecaster: ForecastSource | None
    quantile: float = 0.9
    interval_s: float = 60.0
    horizon_steps: int = 10
    min_instances: int = 0
    max_instances: int = 1000
    lambda_enabled: bool = True
    prewarm_from_plan: bool = True
    prewarm_floor: int = 0
    prewarm_steps: int = 2
    spot_allowed: bool = True
    spot_cover: float = 0.98
    min_billed_seconds: float = 60.0
    recent_plans: int = 0
    launch_overhead_s: float | None = None
    greedy_markets: tuple[str, ...] = ("on-demand",)
    zero_boot_lag: bool = False
    fixed_fleet: tuple[tuple[str, str, int], ...] | None = None
    batching: tuple[SetBatching, ...] = ()
    backoff_s: float = 300.0
    pending_timeout_s: float = 600.0
    token_prefix: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be finite and > 0, got {self.interval_s}")
        if self.horizon_steps < 1:
            raise ValueError(f"horizon_steps must be >= 1, got {self.horizon_steps}")
        if not 0 <= self.min_instances <= self.max_instances:
            raise ValueError(
                f"need 0 <= min_instances <= max_instances, got {self.min_instances}, {self.max_instances}"
            )
        if self.forecaster is not None and self.quantile not in self.forecaster.quantiles:
            raise ValueError(f"quantile {self.quantile} is not among the forecaster's {self.forecaster.quantiles}")
        if self.planner is not None and self.forecaster is None:
            raise ValueError("a planner needs a forecaster")
        keys = {p.key for p in self.pools}
        for ty, mk, n in self.fixed_fleet or ():
            if (ty, mk) not in keys or n < 0:
                raise ValueError(f"fixed_fleet entry {(ty, mk, n)}: not a pool, or a negative count")

    @property
    def future_s(self) -> int:
        """Seconds of true future each observation must carry (the oracle's forecast; 0 otherwise)."""
        if isinstance(self.forecaster, TrueFuture):
            return int(math.ceil(self.horizon_steps * self.interval_s))
        return 0

    def boot_of(self, key: tuple[str, str]) -> float:
        for p in self.pools:
            if p.key == key:
                return p.boot_seconds
        return 0.0


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class ControllerState:
    """What a step hands to the next (an immutable value):

    - ``tick``: steps taken; ``observed_until_s``: the run clock's second the history ends at (None: none);
    - ``history``: per-second arrivals, oldest first, NaN unobserved, at most ``HISTORY_SECONDS``
      (a read-only float64 array);
    - ``forecaster_state``: the forecaster's own (a ``MinuteState`` holding the ``CalibrationState``, the
      running max, …);
    - ``recent_needs``: the last k plans' instances per pool at step 0 (MArk's scale-in hysteresis);
    - ``book``: what was asked and not yet seen done (pending launches, drains, back-offs, …).
    """

    tick: int = 0
    history: np.ndarray = field(default_factory=lambda: _read_only(np.zeros(0)))
    observed_until_s: float | None = None
    forecaster_state: Any = None
    recent_needs: tuple[tuple[tuple[str, str, int], ...], ...] = ()
    book: Book = field(default_factory=Book)

    def __post_init__(self) -> None:
        h = np.array(self.history, dtype=np.float64, copy=True)
        object.__setattr__(self, "history", _read_only(h))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControllerState):
            return NotImplemented
        return (
            self.tick == other.tick
            and np.array_equal(self.history, other.history, equal_nan=True)
            and self.observed_until_s == other.observed_until_s
            and self.forecaster_state == other.forecaster_state
            and self.recent_needs == other.recent_needs
            and self.book == other.book
        )

    __hash__ = None  # type: ignore[assignment]


def initial_state(context: StepContext) -> ControllerState:
    """The state before the first step: no history, the forecaster's initial state, nothing asked."""
    fs = context.forecaster.initial_state() if context.forecaster is not None else None
    return ControllerState(forecaster_state=fs)


def _new_seconds(state: ControllerState, obs: Observation) -> np.ndarray:
    """The arrivals of seconds not in the history yet (NaN for seconds skipped between observations)."""
    arr = np.asarray(obs.arrivals, dtype=np.float64)
    if state.observed_until_s is None:
        return arr
    n = int(round(obs.now_s - state.observed_until_s))
    if n <= 0:
        return arr[:0]
    if n <= arr.size:
        return arr[arr.size - n :]
    return np.concatenate([np.full(n - arr.size, np.nan), arr])


def _extend_history(history: np.ndarray, new: np.ndarray) -> np.ndarray:
    if not new.size:
        return history
    joined = np.concatenate([history, new])[-HISTORY_SECONDS:]
    return _read_only(joined)


def _ready_in(m: FleetMember, now_s: float, boot_s: float) -> float:
    """Seconds until a member serves: 0 if running, else from ``ready_at_s`` or launch + boot (>= 1 s
    while it still boots, so an overdue boot still counts as booting)."""
    if m.state == InstanceState.RUNNING:
        return 0.0
    eta = m.ready_at_s if m.ready_at_s is not None else m.launched_at_s + boot_s
    return max(1.0, eta - now_s)


def _plan_fleet(
    ctx: StepContext, obs: Observation, book: Book, pool_keys: set[tuple[str, str]]
) -> tuple[FleetInstance, ...]:
    """The fleet as the planner sees it: active members of known pools, and pending launches as booting."""
    out = [
        FleetInstance(
            m.instance_id,
            m.instance_type,
            str(m.market),
            ready_in_s=0.0 if ctx.zero_boot_lag else _ready_in(m, obs.now_s, ctx.boot_of((m.instance_type, m.market))),
            launched_at_s=m.launched_at_s,
        )
        for m in active_members(obs, book)
        if (m.instance_type, str(m.market)) in pool_keys
    ]
    for p in book.pending:
        if p.key not in pool_keys:
            continue
        ready = 0.0 if ctx.zero_boot_lag else max(1.0, p.issued_at_s + ctx.boot_of(p.key) - obs.now_s)
        out += [
            FleetInstance(f"pending:{p.token}:{k}", p.instance_type, p.market, ready, p.issued_at_s)
            for k in range(p.remaining)
        ]
    return tuple(out)


def _split_blocked(
    ctx: StepContext, fleet: tuple[FleetInstance, ...], blocked: frozenset[tuple[str, str]], steps: int
) -> tuple[tuple[PoolOption, ...], tuple[FleetInstance, ...], np.ndarray]:
    """Pools and fleet for the planner, and the capacity (req/s per step) of instances in backed-off pools.

    A backed-off pool is left out of the plan (so no planner launches there and the next plan falls back
    to another pool); the instances it already holds still serve: their capacity, from the step each is
    ready, is taken off the demand instead. Pools get boot 0 with ``zero_boot_lag``."""
    pools = tuple(replace(p, boot_seconds=0.0) if ctx.zero_boot_lag else p for p in ctx.pools if p.key not in blocked)
    caps = {p.key: p.capacity_rps for p in ctx.pools}
    t_s = np.arange(steps) * ctx.interval_s
    hidden = np.zeros(steps)
    kept = []
    for f in fleet:
        if f.key in blocked:
            hidden += caps[f.key] * (f.ready_in_s <= t_s)
        else:
            kept.append(f)
    return pools, tuple(kept), hidden


def _need_now(inp: PlanInput) -> tuple[tuple[str, str, int], ...]:
    """A ``recent_needs`` entry: the instances per pool MArk's walk over this forecast requires at step 0
    (``greedy_counts``: from the fleet, adding where under-provisioned, removing where over), before
    the scale-in hysteresis and the boot and billing holds. Recording what a plan *kept* instead would
    keep a spike's instances for ever (each plan keeping what the last ones kept), and counting
    instances still booting would stretch the hysteresis by their boot."""
    candidates = [i for i, p in enumerate(inp.pools) if p.market in inp.greedy_markets]
    counts = greedy_counts(inp, candidates)[0] if candidates else [0] * len(inp.pools)
    return tuple((p.instance_type, p.market, int(n)) for p, n in zip(inp.pools, counts, strict=True) if n)


def _cheapest_pool(pools: tuple[PoolOption, ...], blocked: frozenset[tuple[str, str]]) -> tuple[str, str] | None:
    usable = [p for p in pools if p.key not in blocked]
    if not usable:
        return None
    best = min(usable, key=lambda p: (p.usd_per_hour / p.capacity_rps, p.boot_seconds, p.key))
    return best.key


def _observed(obs: Observation, new: np.ndarray, book: Book) -> dict[str, Any]:
    live = [m for m in obs.fleet if m.state != InstanceState.TERMINATED]
    seen = new[~np.isnan(new)]
    return {
        "now_s": obs.now_s,
        "epoch_s": obs.epoch_s,
        "seconds": int(new.size),
        "arrivals": int(seen.sum()) if seen.size else 0,
        "peak_rps": float(seen.max()) if seen.size else None,
        "fleet": {
            "running": sum(1 for m in live if m.state == InstanceState.RUNNING and not m.draining),
            "booting": sum(1 for m in live if m.state == InstanceState.PENDING),
            "draining": sum(1 for m in live if m.draining or m.state == InstanceState.DRAINING),
            "noticed": sum(1 for m in live if m.notice_at_s is not None),
        },
        "pending_launches": sum(p.remaining for p in book.pending),
        "lambda_warm": obs.lambda_warm,
        "lambda_busy": obs.lambda_busy,
        "requests": obs.requests,
        "within_slo": obs.within_slo,
        "failures": [
            {"action": type(f.action).__name__, "reason": f.reason, "message": f.message} for f in obs.failures
        ],
    }


def _cap(m: FleetMember, caps: dict[tuple[str, str], float]) -> float:
    return caps.get((m.instance_type, str(m.market)), 0.0)


@dataclass(frozen=True)
class _SpotStage:
    response: SpotResponse
    launches: tuple[Launch, ...]
    book: Book


def _spot_stage(
    ctx: StepContext,
    obs: Observation,
    book: Book,
    demand: tuple[float, ...],
    lam: LambdaOption,
    token: str,
) -> _SpotStage:
    """Noticed instances not yet answered: drain them, launch their replacements (they join the book's
    pending launches, so the plan counts them as booting), size Lambda's cover (``policy/spot.py``)."""
    now = obs.now_s
    noticed = [
        m
        for m in obs.fleet
        if m.notice_at_s is not None and m.state != InstanceState.TERMINATED and m.instance_id not in book.replaced
    ]
    if not noticed:
        return _SpotStage(SpotResponse(), (), book)
    caps = {p.key: p.capacity_rps for p in ctx.pools}
    others = active_members(obs, book)
    serving = sum(_cap(m, caps) for m in others if m.state == InstanceState.RUNNING)
    booting = sum(_cap(m, caps) for m in others if m.state != InstanceState.RUNNING)
    booting += sum(caps.get(p.key, 0.0) * p.remaining for p in book.pending)
    as_fleet = [
        FleetInstance(
            m.instance_id,
            m.instance_type,
            str(m.market),
            _ready_in(m, now, ctx.boot_of((m.instance_type, str(m.market)))),
            m.launched_at_s,
            True,
        )
        for m in noticed
    ]
    response = respond_to_notices(
        as_fleet,
        ctx.pools,
        lam if lam.concurrency_limit > 0 else None,
        demand_rps=demand[0] if demand else None,
        serving_rps=serving,
        booting_rps=booting,
        blocked=book.blocked(now),
        spot_allowed=ctx.spot_allowed,
    )
    launches: tuple[Launch, ...] = ()
    if ctx.fixed_fleet is not None or ctx.planner is not None:
        room = ctx.max_instances - active_count(obs, book)
        launches, book, _ = issue_launches(book, response.replacements, now_s=now, token=f"{token}r", room=room)
    book = replace(book, replaced=tuple(sorted({*book.replaced, *response.drain})))
    return _SpotStage(response, launches, book)


@dataclass(frozen=True)
class _PlanStage:
    launches: tuple[tuple[str, str, int], ...] = ()
    terminations: tuple[str, ...] = ()
    prewarm: int = 0
    expected_usd: float = math.nan
    recent_needs: tuple[tuple[tuple[str, str, int], ...], ...] = ()
    plan: Plan | None = None
    inp: PlanInput | None = None


def _fixed_stage(ctx: StepContext, obs: Observation, book: Book, recent: Any) -> _PlanStage:
    """A fixed fleet: launch what is missing of it (all of it at the first step), never let any go."""
    have: dict[tuple[str, str], int] = {}
    for m in active_members(obs, book):
        key = (m.instance_type, str(m.market))
        have[key] = have.get(key, 0) + 1
    for p in book.pending:
        have[p.key] = have.get(p.key, 0) + p.remaining
    fixed = ctx.fixed_fleet or ()
    launches = tuple((ty, mk, n - have.get((ty, mk), 0)) for ty, mk, n in fixed if n > have.get((ty, mk), 0))
    return _PlanStage(launches, recent_needs=recent)


def _plan_stage(
    ctx: StepContext,
    obs: Observation,
    book: Book,
    demand: tuple[float, ...],
    lam: LambdaOption,
    recent: tuple[tuple[tuple[str, str, int], ...], ...],
) -> _PlanStage:
    """The planner on the demand per step, the fleet (pending launches as booting), the pools not backed
    off, Lambda. Without pools (Lambda only, or every pool backed off) Lambda takes the demand."""
    blocked = book.blocked(obs.now_s)
    plan: Plan | None = None
    inp: PlanInput | None = None
    if ctx.planner is not None and demand:
        known = {p.key for p in ctx.pools}
        pools, fleet, hidden = _split_blocked(ctx, _plan_fleet(ctx, obs, book, known), blocked, ctx.horizon_steps)
        launchable = any(p.market in ctx.greedy_markets for p in pools) or ctx.planner_name != "mark_greedy"
        if pools and launchable:
            inp = PlanInput(
                tuple(max(0.0, d - float(h)) for d, h in zip(demand, hidden, strict=True)),
                ctx.interval_s,
                pools,
                fleet,
                lam,
                min_billed_seconds=ctx.min_billed_seconds,
                spot_cover=ctx.spot_cover,
                recent_needs=recent[-ctx.recent_plans :] if ctx.recent_plans else (),
                prewarm_steps=ctx.prewarm_steps,
                launch_overhead_s=ctx.launch_overhead_s,
                greedy_markets=ctx.greedy_markets,
            )
            plan = ctx.planner(inp)
    if plan is not None and inp is not None:
        if ctx.recent_plans:
            recent = (*recent, _need_now(inp))[-ctx.recent_plans :]
        return _PlanStage(
            plan.launches,
            tuple(i for i in plan.terminations if not i.startswith("pending:")),
            plan.lambda_prewarm,
            plan.cost.total_usd,
            recent,
            plan,
            inp,
        )
    prewarm = 0
    if demand and lam.concurrency_limit > 0:  # no pools: Lambda takes it all
        ahead = demand[: max(1, ctx.prewarm_steps)]
        envs = max(math.ceil(min(d, lam.max_rps) * lam.latency_ms / 1000 - 1e-9) for d in ahead)
        prewarm = min(lam.concurrency_limit, envs)
    return _PlanStage(prewarm=prewarm, recent_needs=recent)


def _plan_record(ctx: StepContext, stage: _PlanStage, spot: SpotResponse, rec: Reconciled, book: Book, now: float,
                 demand: tuple[float, ...]) -> dict[str, Any]:  # fmt: skip
    """The decision log's plan summary (JSON-able)."""
    out: dict[str, Any] = {"planner": ctx.planner_name, "quantile": ctx.quantile if demand else None}
    plan, inp = stage.plan, stage.inp
    if plan is not None and inp is not None:
        out.update(
            demand_rps=[float(d) for d in inp.demand_rps],
            launches=[list(x) for x in plan.launches],
            terminations=list(stage.terminations),
            lambda_rps=float(plan.lambda_rps[0]),
            unserved_rps=float(plan.unserved_rps[0]),
            prewarm=int(plan.lambda_prewarm),
            spot_risk_ok=bool(plan.spot_risk_ok[0]),
            cost={
                "instances_usd": plan.cost.instances_usd,
                "lambda_usd": plan.cost.lambda_usd,
                "unserved_penalty_usd": plan.cost.unserved_penalty_usd,
            },
        )
    elif demand:
        out.update(demand_rps=[float(d) for d in demand], prewarm=stage.prewarm)
    if ctx.fixed_fleet is not None:
        out["fixed_fleet"] = [list(f) for f in ctx.fixed_fleet]
    if spot.drain:
        out["spot"] = {
            "noticed": list(spot.drain),
            "replacements": [list(r) for r in spot.replacements],
            "lost_rps": spot.lost_rps,
            "gap_rps": spot.gap_rps,
            "lambda_environments": spot.lambda_environments,
        }
    if book.blocked(now):
        out["backed_off"] = [[t, m, u] for t, m, u in book.backoff]
    if rec.kept_min_billed:
        out["kept_min_billed"] = list(rec.kept_min_billed)
    if rec.kept_min_instances:
        out["kept_min_instances"] = list(rec.kept_min_instances)
    if rec.capped:
        out["capped_by_max_instances"] = rec.capped
    if rec.topped_up:
        out["topped_up_to_min_instances"] = rec.topped_up
    return out


def step(state: ControllerState, observation: Observation, context: StepContext) -> Tick:
    """One control step (see the module docstring); returns the ``Tick`` with the next state."""
    ctx, obs = context, observation
    now = obs.now_s
    # 1. observe
    new = _new_seconds(state, obs)
    history = _extend_history(state.history, new)
    boots = {p.key: p.boot_seconds for p in ctx.pools}
    book = fold(state.book, obs, boot_seconds=boots, backoff_s=ctx.backoff_s, pending_timeout_s=ctx.pending_timeout_s)

    # 2. forecast: the chosen quantile per step
    fstate = state.forecaster_state
    forecast: np.ndarray | None = None
    demand: tuple[float, ...] = ()
    if ctx.forecaster is not None:
        inputs = ForecastInputs(history, new, obs.epoch_s, obs.future_arrivals, ctx.horizon_steps, ctx.interval_s)
        forecast, fstate = ctx.forecaster.forecast(inputs, fstate)
        qi = ctx.forecaster.quantiles.index(ctx.quantile)
        col = [max(0.0, float(x)) if math.isfinite(x) else 0.0 for x in forecast[:, qi]]
        demand = tuple(col)

    lam = ctx.lambda_fn if ctx.lambda_enabled else replace(ctx.lambda_fn, concurrency_limit=0)
    token = f"{ctx.token_prefix}{state.tick}"
    # 3. spot notices
    spot = _spot_stage(ctx, obs, book, demand, lam, token)
    book = spot.book
    # 4. plan
    if ctx.fixed_fleet is not None:
        stage = _fixed_stage(ctx, obs, book, state.recent_needs)
    else:
        stage = _plan_stage(ctx, obs, book, demand, lam, state.recent_needs)
    # 5. reconcile
    prewarm: int | None = None
    if lam.concurrency_limit > 0:
        want = ctx.prewarm_floor
        if ctx.prewarm_from_plan:
            want = max(want, stage.prewarm, spot.response.lambda_environments)
        prewarm = min(want, lam.concurrency_limit)
        if prewarm == 0 and book.prewarm is None:
            prewarm = None  # nothing to ask for yet
    desired = Desired(stage.launches, stage.terminations, spot.response.drain, prewarm, ctx.batching)
    can_launch = ctx.planner is not None or ctx.fixed_fleet is not None
    rec = reconcile(
        desired,
        obs,
        book,
        Limits(ctx.min_instances, ctx.max_instances, ctx.min_billed_seconds),
        token=token,
        top_up_pool=_cheapest_pool(ctx.pools, book.blocked(now)) if can_launch else None,
    )
    batching = [a for a in rec.actions if isinstance(a, SetBatching)]
    rest = [a for a in rec.actions if not isinstance(a, SetBatching)]

    # 6. record
    new_state = ControllerState(
        tick=state.tick + 1,
        history=history,
        observed_until_s=now if state.observed_until_s is None else max(now, state.observed_until_s),
        forecaster_state=fstate,
        recent_needs=stage.recent_needs,
        book=rec.book,
    )
    return Tick(
        tick=state.tick,
        at_s=now,
        actions=(*batching, *spot.launches, *rest),
        state=new_state,
        forecast=None if forecast is None else tuple(tuple(float(x) for x in row) for row in forecast),
        quantiles=tuple(ctx.forecaster.quantiles) if ctx.forecaster is not None else (),
        plan=_plan_record(ctx, stage, spot.response, rec, rec.book, now, demand),
        expected_usd=stage.expected_usd,
        observed=_observed(obs, new, rec.book),
    )
