"""The named control policies ``mark simulate`` compares, each a configuration of the one pure step
(``controller/step.py``), built from a deployment's inputs by :func:`build_controller`.

- ``ours``: the combined forecaster (every member, each calibrated online, mixed by recent pinball loss;
  or the LSTM alone) at p90; ``milp`` (Lambda as a priced slack, spot within the
  risk budget); the allowed types and markets; Lambda pre-warmed from the plan;
- ``mark-release``: 1.2 x the running all-time maximum; ``mark_greedy`` with a 180 s x price launch
  overhead, 6 steps, k = 6; spot; no Lambda; fixed batch sizes, no timeout;
- ``mark-paper``: the LSTM with its static calibration (p90); ``mark_greedy`` with boot x price overhead,
  6 steps, k = 6; on-demand; Lambda takes what instances miss, no pre-warm;
- ``static-peak``: no forecast, no planner: one type sized for the window's peak, launched at t = 0,
  on-demand, no Lambda;
- ``lambda-only``: no instance ever; Lambda takes everything;
- ``oracle``: the true future; the exact MILP; zero boot lag (by default: launches exactly one boot
  ahead of the true need, the simulator booting as for everyone); otherwise as ``ours``.

Sources for MArk: Zhang, Yu, Wang, Wang, "MArk: Exploiting Cloud Services for Cost-Effective,
SLO-Aware Machine Learning Inference Serving", USENIX ATC 2019 (the published design: LSTM forecast,
cost-per-request greedy provisioning with launch overhead = boot time x price, scale-in after the last
k plans agree, on-demand instances, Lambda for what instances cannot take); and its public code,
github.com/marcoszh/MArk-Project, ``modules/proactive_controller.py`` (the release: 1.2 x the running
maximum of the per-minute peak of twelve 5-s windows as the forecast, a flat 180 s launch overhead,
a 6-step look-ahead, scale-in only below the maximum of the last 6 plans, spot instances, fixed batch
sizes per type with no timeout; its Lambda path is never called), as cited in
``policy/planning/mark_greedy.py``.

``sagemaker`` and ``sagemaker-batched`` (Application Auto Scaling target tracking) are built by
``controller/sagemaker.py``; :func:`build_controller` routes those names there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.config import DeploymentConfig
from orchestrator.controller.actions import SetBatching
from orchestrator.controller.forecasting import (
    ForecastSource,
    OnlineEnsemble,
    OnlineLSTM,
    RunningPeakMax,
    StaticForecaster,
    TrueFuture,
)
from orchestrator.controller.state import Controller, Observation, Tick
from orchestrator.controller.step import ControllerState, StepContext, initial_state, step
from orchestrator.economics.capacity import CapacityRow, capacity_report, request_cpu_ms
from orchestrator.economics.catalog import Catalog, load_catalog
from orchestrator.economics.lambda_price import usd_per_invocation
from orchestrator.economics.latency_profiles import single_thread_batches
from orchestrator.policy.planning import ON_DEMAND, SPOT, LambdaOption, Plan, PlanInput, PoolOption
from orchestrator.policy.planning import mark_greedy as _mark_greedy
from orchestrator.policy.planning import milp as _milp
from orchestrator.types import Slo
from predictor.online import DEFAULT_GAMMA

POLICIES: tuple[str, ...] = ("ours", "mark-release", "mark-paper", "static-peak", "lambda-only", "oracle")
SAGEMAKER_POLICIES: tuple[str, ...] = ("sagemaker", "sagemaker-batched")

# MArk's public code (modules/proactive_controller.py): what mark-release runs with.
MARK_RELEASE_LAUNCH_OVERHEAD_S = 180.0
MARK_LOOKAHEAD_STEPS = 6
MARK_RECENT_PLANS = 6
MARK_PEAK_FACTOR = 1.2
DEFAULT_QUANTILE = 0.9


@dataclass(frozen=True)
class PolicyInputs:
    """What every policy is built from (a ``DeploymentConfig`` gives most: :func:`inputs_from_config`).

    - ``model``, ``slo``, ``catalog`` (None: the committed ``profiles/catalog.yaml``);
    - ``instance_types`` (None: every type of the catalog) and ``markets`` the deployment allows;
    - Lambda: ``lambda_enabled``, ``lambda_memory_mb``, ``lambda_concurrency`` (None: the catalog's
      account default), ``lambda_prewarm`` (environments held warm at least), ``lambda_latency_ms``
      (warm duration of one request; None: this machine's one-thread T(1) p50 + the worker's host CPU
      per request, the estimate ``mark plan fleet`` uses);
    - controller: ``interval_s`` (Δ, s), ``horizon_steps``, ``forecast_quantile`` (0.9: see ``ours``),
      ``min_instances`` / ``max_instances``;
    - ``peak_rps``: the window's peak per-second rate, for ``static-peak`` (the caller reads it off the trace);
      ``oracle_boot``: ``"real"`` or ``"zero"``, how ``oracle`` realises zero boot lag (see there);
    - ``forecaster_dir``: the trained forecaster (None: ``profiles/forecaster``), ``forecaster_kind``:
      what ``ours`` runs (``"combined"``, the default: every member mixed by recent pinball loss;
      ``"lstm"``: the LSTM alone), ``gamma``: the online calibration's step size; ``token_prefix``:
      prefixes launch tokens;
    - overrides, for tests or a caller that has them: ``pools`` (skips the capacity table; then
      ``batching`` as ``(type, batch size, timeout ms)`` per type, default none), ``lambda_fn``,
      ``forecaster`` (replaces the LSTM of ``ours`` and ``mark-paper``).
    """

    model: str = "mobilenet_v2"
    slo: Slo = Slo()
    catalog: Catalog | None = None
    instance_types: tuple[str, ...] | None = None
    markets: tuple[str, ...] = (ON_DEMAND, SPOT)
    lambda_enabled: bool = True
    lambda_memory_mb: int = 2048
    lambda_concurrency: int | None = None
    lambda_prewarm: int = 0
    lambda_latency_ms: float | None = None
    interval_s: float = 60.0
    horizon_steps: int = 10
    forecast_quantile: float = DEFAULT_QUANTILE
    min_instances: int = 0
    max_instances: int = 1000
    peak_rps: float | None = None
    oracle_boot: str = "real"
    forecaster_dir: str | Path | None = None
    forecaster_kind: str = "combined"
    profiles_dir: Path | None = None  # latency profiles (None: the committed profiles/latency)
    initial_rps: float | None = None  # sagemaker: the load when the window begins (sizes its first fleet)
    gamma: float = DEFAULT_GAMMA
    token_prefix: str = ""
    pools: tuple[PoolOption, ...] | None = None
    batching: tuple[tuple[str, int, float], ...] | None = None
    lambda_fn: LambdaOption | None = None
    forecaster: ForecastSource | None = None


class StepController:
    """A named configuration of the pure step: satisfies ``controller.state.Controller``.

    ``context`` is the whole configuration (``StepContext``); ``description`` says in one line what the
    policy is, for reports. For the simulator: ``price_source`` (``"ec2"``: instances at the catalog's
    EC2 prices), ``uses_lambda`` (whether the policy sends anything to Lambda) and ``boot_seconds``
    (per type, the boot the policy plans with and the simulator must apply: the catalog's, or 0 for the
    oracle with ``oracle_boot="zero"``)."""

    price_source: str = "ec2"

    def __init__(self, name: str, context: StepContext, description: str = "") -> None:
        self.name = name
        self.context = context
        self.description = description
        self.interval_s: float = context.interval_s
        self.future_s: int = context.future_s
        self.uses_lambda: bool = context.lambda_enabled

    @property
    def boot_seconds(self) -> Mapping[str, float]:
        """Boot seconds per instance type as planned with: the simulator must boot this policy's instances
        so (the catalog's figures, via the capacity table; 0 with ``StepContext.zero_boot_lag``)."""
        zero = self.context.zero_boot_lag
        return MappingProxyType({p.instance_type: 0.0 if zero else p.boot_seconds for p in self.context.pools})

    def initial_state(self) -> ControllerState:
        return initial_state(self.context)

    def step(self, state: Any, observation: Observation) -> Tick:
        return step(state, observation, self.context)

    def __repr__(self) -> str:
        return f"StepController({self.name!r})"


# --- what the policies are built from ------------------------------------------------------------


@dataclass(frozen=True)
class _Resolved:
    pools: tuple[PoolOption, ...]
    batching: dict[str, tuple[int, float]]  # type -> (batch size, timeout ms)
    lambda_fn: LambdaOption
    catalog: Catalog | None


def _resolve(inp: PolicyInputs) -> _Resolved:
    catalog = inp.catalog
    if inp.pools is not None:
        pools = inp.pools
        batching = {t: (b, w) for t, b, w in inp.batching or ()}
    else:
        catalog = catalog or load_catalog()
        report = capacity_report(
            inp.model,
            catalog,
            inp.slo.rt_max_ms,
            inp.slo.sl_min,
            inp.slo.epsilon_ms,
            types=inp.instance_types,
            profiles_dir=inp.profiles_dir,
        )
        rows: tuple[CapacityRow, ...] = report.rows
        if not rows:
            reasons = "; ".join(f"{t}: {r}" for t, r in report.skipped) or "no instance types given"
            raise ValueError(f"no instance type can serve {inp.model} within the SLO ({reasons})")
        pools = tuple(r.pool() for r in rows)
        batching = {r.instance_type: (r.batch_size, r.batch_timeout_ms) for r in rows}
    lam = inp.lambda_fn or _lambda_option(inp, catalog or load_catalog())
    return _Resolved(pools, batching, lam, catalog)


def _lambda_option(inp: PolicyInputs, catalog: Catalog) -> LambdaOption:
    """Lambda as the planner sees it: price per request (request + GB-seconds), concurrency, warm duration."""
    pricing = catalog.lambda_
    if inp.lambda_latency_ms is not None:
        ms = inp.lambda_latency_ms
    else:
        ms = single_thread_batches(inp.model, inp.profiles_dir)[0][1] + (request_cpu_ms(inp.model) or 0.0)
    limit = pricing.default_concurrency.value if inp.lambda_concurrency is None else inp.lambda_concurrency
    if ms + inp.slo.epsilon_ms > inp.slo.rt_max_ms:
        limit = 0  # Lambda cannot answer within the SLO: the planner must not count on it
    return LambdaOption(usd_per_invocation(pricing, inp.lambda_memory_mb, ms), limit, ms)


def _markets(pools: Sequence[PoolOption], markets: Sequence[str]) -> tuple[PoolOption, ...]:
    return tuple(p for p in pools if p.market in markets)


def _need(pools: tuple[PoolOption, ...], policy: str, what: str) -> tuple[PoolOption, ...]:
    if not pools:
        raise ValueError(f"{policy}: no {what} pool serves the model within the SLO among the allowed types")
    return pools


def _set_batching(
    pools: Sequence[PoolOption], batching: dict[str, tuple[int, float]], timeout_ms: float | None = None
) -> tuple[SetBatching, ...]:
    types = sorted({p.instance_type for p in pools} & set(batching))
    return tuple(SetBatching(t, batching[t][0], batching[t][1] if timeout_ms is None else timeout_ms) for t in types)


def _forecaster(inp: PolicyInputs, *, online: bool) -> ForecastSource:
    if inp.forecaster is not None:
        return inp.forecaster
    from predictor.runtime import SHIPPED_MODEL_DIR, load_ensemble, load_lstm

    if inp.forecaster_kind not in ("combined", "lstm"):
        raise ValueError(f"forecaster_kind must be 'combined' or 'lstm', got {inp.forecaster_kind!r}")
    if online and inp.forecaster_kind == "combined":
        return OnlineEnsemble(load_ensemble(inp.forecaster_dir or SHIPPED_MODEL_DIR, gamma=inp.gamma))
    lstm = load_lstm(inp.forecaster_dir or SHIPPED_MODEL_DIR)
    return OnlineLSTM(lstm, inp.gamma) if online else StaticForecaster(lstm)


def _greedy(inp: PlanInput) -> Plan:
    return _mark_greedy(inp)


# Branch and bound's limit per step. At x1 a step finishes in ~0.1 s; with a fleet of tens over 24 pools
# (Twitter x20) it does not finish in 10 s (a day would take 4 h), so the oracle there is the best plan
# branch and bound finds in this time, started from the LP + DP plan (never worse than it).
ORACLE_TIME_LIMIT_S = 0.5


def _exact(inp: PlanInput) -> Plan:
    """The cheaper of ``milp`` by branch and bound to a 1e-7 gap (the planner ``planning.oracle`` runs)
    within ``ORACLE_TIME_LIMIT_S`` and ``milp``'s LP + fleet program, on the demand in the input (the
    true future) and the pools' real boot. Where branch and bound finishes, it is the optimum; where it
    stops early (fleets of tens over many pools), its incumbent can be far dearer than the LP + DP
    plan, and an oracle planning worse than ``ours`` is no bound at all."""
    bnb, lp_dp = _milp(inp, ORACLE_TIME_LIMIT_S, exact=True), _milp(inp)
    best = bnb if bnb.cost.total_usd <= lp_dp.cost.total_usd else lp_dp
    return replace(best, planner="oracle")


# --- the policies ---------------------------------------------------------------------------------


def ours(inp: PolicyInputs) -> StepController:
    """Ours: the combined forecaster (``forecaster_kind="combined"``, the default: the LSTM, the quantile
    regression and the baselines, each calibrated online (Gibbs & Candes 2021, bounded), mixed per horizon
    and quantile by their recent pinball loss, ``predictor/ensemble.py``; ``"lstm"``: the online-calibrated
    LSTM alone), the ``milp`` planner with Lambda as a priced slack, spot within the risk budget
    (``spot_cover`` = SLmin: losing the largest spot pool still leaves instances + Lambda covering SLmin
    of demand), Lambda pre-warmed from the plan (``Plan.lambda_prewarm``, and the spot gap), the batching
    plan's (b, W) per type, the allowed types and markets.

    The quantile planned for is ``forecast_quantile``, 0.9 by default. DESIGN.md asks for "the one at
    which instances + Lambda slack meet SLmin at least cost": with Lambda absorbing the excess over the
    forecast at its per-request price, provisioning instances for the p90 of each minute's *peak* second
    leaves Lambda the rare seconds above it; the p99 buys instances for spikes Lambda serves more cheaply,
    the p50 sends a large share to Lambda. 0.9 is the setting chosen, not tuned on the test day."""
    r = _resolve(inp)
    pools = _need(_markets(r.pools, inp.markets), "ours", "allowed")
    spot = SPOT in inp.markets
    ctx = StepContext(
        pools=pools,
        lambda_fn=r.lambda_fn,
        planner=_milp,
        planner_name="milp",
        forecaster=_forecaster(inp, online=True),
        quantile=inp.forecast_quantile,
        interval_s=inp.interval_s,
        horizon_steps=inp.horizon_steps,
        min_instances=inp.min_instances,
        max_instances=inp.max_instances,
        lambda_enabled=inp.lambda_enabled,
        prewarm_from_plan=True,
        prewarm_floor=inp.lambda_prewarm if inp.lambda_enabled else 0,
        spot_allowed=spot,
        spot_cover=inp.slo.sl_min if spot else 0.0,
        batching=_set_batching(pools, r.batching),
        token_prefix=inp.token_prefix,
    )
    what = "combined forecaster" if inp.forecaster_kind == "combined" else "online-calibrated LSTM"
    return StepController("ours", ctx, f"{what} p90, milp with Lambda slack, spot in risk budget")


def mark_release(inp: PolicyInputs) -> StepController:
    """MArk as its public code runs (marcoszh/MArk-Project, modules/proactive_controller.py):

    - forecast: 1.2 x the running all-time maximum of the per-minute peak (MArk: of twelve 5-s windows;
      here: of the per-second counts, the trace's resolution; ``RunningPeakMax``), every quantile alike;
    - planner: ``mark_greedy`` with a flat 180 s x price launch overhead (``launch_overhead_s``), a
      6-step look-ahead, scale-in only below the maximum of the last 6 plans (``recent_needs``);
    - spot market only (whatever the deployment allows; the spot risk budget off, as MArk has none);
      a noticed instance is still drained and replaced by the shared step (MArk's code has no notice
      handling to copy; without it every interruption would be a plain loss of capacity);
    - no Lambda (its Lambda path is dead code in the release);
    - fixed batch size per type with no timeout: ``SetBatching(type, b, 0)`` with b the batching plan's.
    """
    r = _resolve(inp)
    # MArk's release buys spot; a deployment that allows no spot gets the markets it allows
    markets = (SPOT,) if SPOT in inp.markets else tuple(inp.markets)
    pools = _need(_markets(r.pools, markets), "mark-release", "/".join(markets))
    ctx = StepContext(
        pools=pools,
        lambda_fn=r.lambda_fn,
        planner=_greedy,
        planner_name="mark_greedy",
        forecaster=RunningPeakMax(MARK_PEAK_FACTOR),
        quantile=DEFAULT_QUANTILE,
        interval_s=inp.interval_s,
        horizon_steps=MARK_LOOKAHEAD_STEPS,
        min_instances=inp.min_instances,
        max_instances=inp.max_instances,
        lambda_enabled=False,
        prewarm_from_plan=False,
        spot_allowed=True,
        spot_cover=0.0,
        recent_plans=MARK_RECENT_PLANS,
        launch_overhead_s=MARK_RELEASE_LAUNCH_OVERHEAD_S,
        greedy_markets=(SPOT,),
        batching=_set_batching(pools, r.batching, timeout_ms=0.0),
        token_prefix=inp.token_prefix,
    )
    return StepController("mark-release", ctx, "MArk's public code: 1.2 x running max, greedy, spot, no Lambda")


def mark_paper(inp: PolicyInputs) -> StepController:
    """MArk as published (Zhang et al., USENIX ATC'19):

    - forecast: an LSTM; here the shipped LSTM with its static (fit) calibration, no online
      adaptation, at ``forecast_quantile`` (0.9, as ``ours``, so the comparison isolates planner,
      market, pre-warm and calibration);
    - planner: ``mark_greedy`` with launch overhead = boot time x price, as published; 6-step
      look-ahead and k = 6 plans of scale-in hysteresis (the release's figures; the paper gives none);
    - on-demand instances only; Lambda takes what instances cannot (enabled as the deployment says),
      with no pre-warm;
    - the batching plan's (b, W) per type (MArk's SLO-aware batching).
    """
    r = _resolve(inp)
    pools = _need(_markets(r.pools, (ON_DEMAND,)), "mark-paper", "on-demand")
    ctx = StepContext(
        pools=pools,
        lambda_fn=r.lambda_fn,
        planner=_greedy,
        planner_name="mark_greedy",
        forecaster=_forecaster(inp, online=False),
        quantile=inp.forecast_quantile,
        interval_s=inp.interval_s,
        horizon_steps=MARK_LOOKAHEAD_STEPS,
        min_instances=inp.min_instances,
        max_instances=inp.max_instances,
        lambda_enabled=inp.lambda_enabled,
        prewarm_from_plan=False,
        spot_allowed=False,
        spot_cover=0.0,
        recent_plans=MARK_RECENT_PLANS,
        greedy_markets=(ON_DEMAND,),
        batching=_set_batching(pools, r.batching),
        token_prefix=inp.token_prefix,
    )
    return StepController("mark-paper", ctx, "MArk as published: LSTM, greedy, on-demand, Lambda for misses")


def static_peak_fleet(pools: Sequence[PoolOption], peak_rps: float) -> tuple[PoolOption, int]:
    """The one-type on-demand fleet that covers ``peak_rps`` at the lowest price per hour: min over pools
    of ceil(peak / capacity at SLO) x price (ties: the faster boot, then the name)."""
    if not pools:
        raise ValueError("static-peak: no on-demand pool")
    return min(
        ((p, max(1, math.ceil(peak_rps / p.capacity_rps - 1e-9))) for p in pools),
        key=lambda pc: (pc[1] * pc[0].usd_per_hour, pc[0].boot_seconds, pc[0].instance_type),
    )


def static_peak(inp: PolicyInputs) -> StepController:
    """A fleet fixed for the window's peak: ``peak_rps`` (the caller computes it from the trace: the
    simulator gives no future) covered by the cheapest one-type on-demand fleet
    (:func:`static_peak_fleet`), clamped to ``min_instances..max_instances``, launched at the first step
    and never changed (a lost instance is relaunched); no forecast, no planner, no Lambda."""
    if inp.peak_rps is None or not (math.isfinite(inp.peak_rps) and inp.peak_rps >= 0):
        raise ValueError(f"static-peak needs peak_rps (the window's peak req/s, >= 0), got {inp.peak_rps}")
    r = _resolve(inp)
    pools = _need(_markets(r.pools, (ON_DEMAND,)), "static-peak", "on-demand")
    pool, n = static_peak_fleet(pools, inp.peak_rps)
    n = max(inp.min_instances, min(n, inp.max_instances))
    ctx = StepContext(
        pools=(pool,),
        lambda_fn=r.lambda_fn,
        planner=None,
        planner_name="static",
        forecaster=None,
        interval_s=inp.interval_s,
        horizon_steps=1,
        min_instances=0,
        max_instances=max(n, inp.max_instances),
        lambda_enabled=False,
        prewarm_from_plan=False,
        spot_allowed=False,
        spot_cover=0.0,
        fixed_fleet=((pool.instance_type, pool.market, n),),
        batching=_set_batching((pool,), r.batching),
        token_prefix=inp.token_prefix,
    )
    return StepController("static-peak", ctx, f"{n} x {pool.instance_type} on-demand for {inp.peak_rps:g} req/s")


def lambda_only(inp: PolicyInputs) -> StepController:
    """Every request to Lambda: no instance is ever launched; ``lambda_prewarm`` environments held warm
    from the first step (no forecast)."""
    r = _resolve(inp) if inp.lambda_fn is None else _Resolved((), {}, inp.lambda_fn, inp.catalog)
    ctx = StepContext(
        pools=(),
        lambda_fn=r.lambda_fn,
        planner=None,
        planner_name="none",
        forecaster=None,
        interval_s=inp.interval_s,
        horizon_steps=1,
        min_instances=0,
        max_instances=0,
        lambda_enabled=True,
        prewarm_from_plan=False,
        prewarm_floor=inp.lambda_prewarm,
        spot_allowed=False,
        spot_cover=0.0,
        token_prefix=inp.token_prefix,
    )
    return StepController("lambda-only", ctx, "all requests to Lambda")


def oracle(inp: PolicyInputs) -> StepController:
    """The cost lower bound: the true future (``Observation.future_arrivals``, ``future_s`` = horizon x Δ
    seconds; ``TrueFuture``: each step's true peak), the exact planner (``milp`` by branch and bound to
    a 1e-7 gap, as ``planning.oracle``), otherwise as ``ours`` (allowed types and markets, spot risk
    budget, Lambda with pre-warm from the plan, the batching plan's (b, W)).

    Zero boot lag, two ways (``oracle_boot``), the plan always agreeing with the simulator:

    - ``"real"`` (default): the simulator boots the oracle's instances for their real boot time (as
      everyone's). With the true future the planner launches each instance exactly one boot ahead of
      the step that needs it (its boot lag is the simulator's), so no demand ever waits on a boot,
      except in the first steps of a run, before any launch could have booted; boot time is billed, as
      for every policy. The best any controller can do in this simulator. (Planning with boot 0
      against the real boot, on the demand advanced by the boot, was tried: to the planner, keeping an
      instance and relaunching one in an equally priced pool then cost the same, so it churned; in a
      one-hour check, a sine load over four c5/g4dn pools, each launch's boot billed, not a benchmark,
      it launched 64 instances against 5 and cost 1.56 x as much.)
    - ``"zero"``: instances boot at once and their boot is never billed: ``StepController.boot_seconds``
      is 0 for every type and the simulator must apply it (``SimSetup.boot_seconds``); the plan is made
      with boot 0 (``StepContext.zero_boot_lag``). A looser bound: it also removes the boot cost that
      no real policy can avoid."""
    if inp.oracle_boot not in ("real", "zero"):
        raise ValueError(f"oracle_boot must be 'real' or 'zero', got {inp.oracle_boot!r}")
    ctx = replace(
        ours(inp).context,  # the same pools, markets, risk budget, Lambda and batching as ours
        planner=_exact,
        planner_name="oracle",
        forecaster=TrueFuture(),
        quantile=DEFAULT_QUANTILE,
        zero_boot_lag=inp.oracle_boot == "zero",
    )
    return StepController("oracle", ctx, "true future, zero boot lag, exact planner")


BUILDERS = {
    "ours": ours,
    "mark-release": mark_release,
    "mark-paper": mark_paper,
    "static-peak": static_peak,
    "lambda-only": lambda_only,
    "oracle": oracle,
}


def build_controller(name: str, **inputs: Any) -> Controller:
    """The controller called ``name`` (one of :data:`POLICIES`, or ``sagemaker`` / ``sagemaker-batched``)
    from :class:`PolicyInputs` fields given as keywords (``inputs_from_config`` makes them from a
    deployment config). Builds read the capacity table and load the forecaster (I/O here, never in
    ``step``).

    Raises:
        ValueError: an unknown name or input, or a policy its inputs cannot build.
    """
    known = {f.name for f in fields(PolicyInputs)}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise ValueError(f"unknown policy inputs {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    inp = PolicyInputs(**inputs)
    if name in SAGEMAKER_POLICIES:
        from orchestrator.controller.sagemaker import SageMakerController

        def sagemaker(**kw: Any) -> SageMakerController:
            return SageMakerController.for_model(
                inp.model,
                inp.catalog or load_catalog(),
                inp.slo,
                inp.instance_types,
                batching=name == "sagemaker-batched",
                profiles_dir=inp.profiles_dir,
                max_capacity=inp.max_instances,
                **kw,
            )

        ctl = sagemaker()
        if inp.initial_rps:  # an endpoint live before the window: as target tracking would have sized it
            n = math.ceil(inp.initial_rps * 60.0 / ctl.policy.target_value - 1e-9)
            ctl = sagemaker(initial=max(1, min(n, inp.max_instances)))
        return ctl
    if name not in BUILDERS:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join((*POLICIES, *SAGEMAKER_POLICIES))}")
    return BUILDERS[name](inp)


def inputs_from_config(config: DeploymentConfig, *, model: str | None = None) -> dict[str, Any]:
    """:func:`build_controller`'s keywords from a deployment config (the first model unless ``model``)."""
    return {
        "model": model or config.models[0],
        "slo": config.slo,
        "instance_types": tuple(config.fleet.instance_types),
        "markets": tuple(str(m) for m in config.fleet.markets),
        "lambda_enabled": config.lambda_.enabled,
        "lambda_memory_mb": config.lambda_.memory_mb,
        "lambda_concurrency": config.lambda_.concurrency,
        "lambda_prewarm": config.lambda_.prewarm,
        "interval_s": config.controller.interval_s,
        "horizon_steps": config.controller.horizon_steps,
        "forecast_quantile": config.controller.forecast_quantile,
        "forecaster_kind": config.controller.forecaster,
        "min_instances": config.fleet.min_instances,
        "max_instances": config.fleet.max_instances,
        "token_prefix": f"{config.name}-",
    }
