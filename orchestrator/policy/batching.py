"""Batch size, batch timeout and capacity at SLO for one (model variant, instance type) (DESIGN.md §3).

Pure: a service profile and the SLO in, frozen dataclasses out. No I/O, no clock, no randomness.

For every candidate batch size b (the profile's measured sizes, where batching pays: b/T(b) > 1/T(1),
b = 1 always) and a few batch timeouts W with ``W + T_p99(b) + eps <= RTmax``, the *capacity at SLO*
is the highest Poisson rate at which the ``sl_min``-quantile of a request's time in the worker
(waiting for its batch to form or for a free slot, queueing, service) stays <= RTmax - eps. It comes
from the analytic model below, evaluated on a rate grid and refined once (deterministic); the
candidate with the highest capacity has the lowest cost per request (price per second / capacity).

The worker's discipline (ec2_worker/discipline.py): one FIFO queue, ``slots`` servers; a free server
dispatches at once if b requests wait, else when b have arrived or the oldest has waited W, taking up
to b. So under load a batch is whatever accumulated while every slot was busy. (The worker also sends
a batch early when waiting would make its oldest request miss its deadline; W + T_p99(b) + eps <= RTmax
keeps that rule from binding, short of the worker's 1 ms dispatch margin, so the model leaves it out and
the simulation keeps it.) The model, per rate λ
(request service times are lognormal with the profile's p50/p99 at n rows, interpolated linearly):

1. batch size: n = max(min(b, 1 + λW), n_C), where n_C is the fluid fixed point n = λ·S(n)/c of
   "every slot busy, each dispatch takes what arrived since the previous one" (S = mean service);
2. a request that finds a slot idle waits at most min(W, (b-1)/λ), then its batch's service:
   L_form = min(W, (b-1)/λ) + S_q(min(b, 1 + λW));
3. a request that finds every slot busy (probability from Erlang C at utilization λ·S(n)/(c·n))
   waits the residual R of the gap between two slot-free moments, then serves in a batch of
   1 + λ·G rows, G the gap it arrived in. Gaps have mean S(n)/c and CV² (c-1)/(c+1) + cs²/c (the
   spacing of c independent busy periods; a measured fit in the simulator), taken as a gamma
   distribution; G is length-biased, R = U·G. L_gap = the quantile of R + S(1 + λG)·jitter,
   integrated over G and the service jitter on fixed quantile grids, solved by bisection;
4. when full batches pile up (Erlang C probability of waiting at ρ_b = λ·S(b)/(c·b) above 1 - SLmin),
   the queue of full batches is a GI/G/c queue with Erlang-b arrivals; its wait tail is
   P(Q > t) = P(wait)·exp(-θt), θ the Cramér-Lundberg root of M_S(θ/c)·(λ/(λ+θ))^b = 1 (service taken
   gamma with the profile's mean and CV²): L_block = ln(P(wait)/(1-SLmin))/θ + S_q(b);
5. the latency quantile is max(L_form, L_gap, L_block), infinite at ρ_b >= 1;
6. capacity = the first rate on a rising grid where it passes RTmax - eps, refined, less 3% headroom
   (the quantile climbs steeply near saturation, and profiles come from a few hundred samples).

Checked against an exact discrete-event simulation of the discipline (orchestrator/sim/batch_queue.py,
tests/unit/test_batching_policy.py): within a few percent on the test profiles; see capacity_at_slo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

Z99 = NormalDist().inv_cdf(0.99)
DEFAULT_EPSILON_MS = 5.0
DEFAULT_HEADROOM = 0.03  # capacity is quoted 3% below the modelled SLO crossing (see capacity_at_slo)
TIMEOUT_FRACTIONS = (0.0, 0.25, 0.5, 1.0)  # W candidates, as fractions of RTmax - eps - T_p99(b)

# Quantile grids for the numerical integration over the gap length (fine in the upper tail, where
# the SLmin-quantile is decided) and over the service jitter: midpoints of these probability bins.
_GAP_EDGES: tuple[float, ...] = (0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.985)
_GAP_EDGES += (0.99, 0.9925, 0.995, 0.9975, 0.999, 0.9995, 1.0)
_JITTER_EDGES: tuple[float, ...] = (0, 0.2, 0.5, 0.8, 0.95, 0.99, 1.0)
_GRID_POINTS = 40  # rates per pass of the capacity search (two passes)


def _bins(edges: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal quantiles at the probability midpoints of the bins, and the bins' weights."""
    nd = NormalDist()
    mids = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
    return np.array([nd.inv_cdf(p) for p in mids]), np.diff(np.array(edges))


_GAP_Z, _GAP_W = _bins(_GAP_EDGES)
_JIT_Z, _JIT_W = _bins(_JITTER_EDGES)
for _a in (_GAP_Z, _GAP_W, _JIT_Z, _JIT_W):
    _a.flags.writeable = False  # constants, not state


class BatchingError(ValueError):
    """A profile or SLO that cannot be planned for; the message says which value and why."""


@dataclass(frozen=True)
class ServiceProfile:
    """Service time of a batch on one slot, T(b) as (batch_size, p50_ms, p99_ms), and the slot count."""

    batches: tuple[tuple[int, float, float], ...]
    slots: int

    def __post_init__(self) -> None:
        if not self.batches or self.batches[0][0] != 1:
            raise BatchingError("profile needs batch size 1 first (T(1) decides whether batching pays)")
        if self.slots < 1:
            raise BatchingError(f"slots must be >= 1, got {self.slots}")
        prev = 0
        for b, p50, p99 in self.batches:
            if b <= prev:
                raise BatchingError(f"batch sizes must be increasing integers >= 1, got {[x[0] for x in self.batches]}")
            if not (math.isfinite(p50) and p50 > 0 and math.isfinite(p99) and p99 >= p50):
                raise BatchingError(f"batch {b}: need 0 < p50_ms <= p99_ms, got p50 {p50}, p99 {p99}")
            prev = b

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(b for b, _, _ in self.batches)

    def p50_ms(self, n: float) -> float:
        return float(np.interp(n, self.batch_sizes, [p for _, p, _ in self.batches]))

    def p99_ms(self, n: float) -> float:
        return float(np.interp(n, self.batch_sizes, [p for _, _, p in self.batches]))


@dataclass(frozen=True)
class BatchingCandidate:
    """One feasible (b, W) and what it yields at the SLO."""

    batch_size: int
    batch_timeout_ms: float
    capacity_rps: float  # capacity at SLO, requests/s per instance
    usd_per_million: float  # price per second / capacity x 1e6 (inf at zero capacity)
    service_p99_ms: float  # T_p99(b)


@dataclass(frozen=True)
class BatchingPlan:
    """The best candidate (highest capacity, so cheapest per request), all candidates, and why."""

    best: BatchingCandidate | None
    candidates: tuple[BatchingCandidate, ...]  # sorted: highest capacity first
    reason: str


def _check_slo(rt_max_ms: float, sl_min: float, epsilon_ms: float) -> None:
    if not (math.isfinite(rt_max_ms) and rt_max_ms > 0):
        raise BatchingError(f"rt_max_ms must be a positive number, got {rt_max_ms}")
    if not 0 < sl_min < 1:
        raise BatchingError(f"sl_min must lie strictly between 0 and 1, got {sl_min}")
    if not (math.isfinite(epsilon_ms) and epsilon_ms >= 0):
        raise BatchingError(f"epsilon_ms must be >= 0, got {epsilon_ms}")


class _Curves:
    """Vectorized service-time figures at (fractional) batch sizes: median, lognormal sigma, mean."""

    def __init__(self, profile: ServiceProfile, quantile: float) -> None:
        self.bs = np.array(profile.batch_sizes, dtype=float)
        self.p50 = np.array([p for _, p, _ in profile.batches])
        self.sig = np.log(np.array([q for _, _, q in profile.batches]) / self.p50) / Z99
        self.zq = NormalDist().inv_cdf(quantile)

    def med(self, n: np.ndarray) -> np.ndarray:
        return np.interp(n, self.bs, self.p50)

    def sigma(self, n: np.ndarray) -> np.ndarray:
        return np.interp(n, self.bs, self.sig)

    def mean(self, n: np.ndarray) -> np.ndarray:
        return self.med(n) * np.exp(self.sigma(n) ** 2 / 2)

    def cs2(self, n: np.ndarray) -> np.ndarray:
        return np.expm1(self.sigma(n) ** 2)

    def quant(self, n: np.ndarray) -> np.ndarray:
        return self.med(n) * np.exp(self.sigma(n) * self.zq)


def _erlang_c(c: int, util: np.ndarray) -> np.ndarray:
    """Probability that an arrival finds all c servers busy (M/M/c), per utilization; 1 at util >= 1."""
    a = c * np.minimum(util, 1 - 1e-12)
    term = np.ones_like(a)
    head = np.ones_like(a)
    for k in range(1, c):
        term = term * a / k
        head = head + term
    tail = term * a / c * (c / (c - a))
    return np.where(util >= 1, 1.0, tail / (head + tail))


def _lundberg(mean_ms: float, cs2: float, c: int, b: int, lam: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Decay rate θ (1/ms) of the full-batch queue's wait tail: log M_S(θ/c) = b·log(1 + θ/λ), θ > 0."""

    def f(th: np.ndarray) -> np.ndarray:
        s = th / c
        if cs2 < 1e-9:
            log_m = s * mean_ms
        else:
            log_m = -np.log(np.maximum(1 - s * mean_ms * cs2, 1e-300)) / cs2
        return log_m - b * np.log1p(th / lam)

    # xρ = log(1 + x) (x = θ/λ, deterministic service) has its root below 2 + 4·log(1/ρ)/ρ.
    hi = lam * (2 + 4 * np.log(1 / rho) / rho)
    if cs2 >= 1e-9:
        hi = np.minimum(hi, c / (mean_ms * cs2) * (1 - 1e-9))
    lo = np.zeros_like(lam)
    for _ in range(60):
        mid = (lo + hi) / 2
        neg = f(mid) < 0
        lo = np.where(neg, mid, lo)
        hi = np.where(neg, hi, mid)
    return np.maximum(hi, 1e-12)


def latency_quantile_ms(
    profile: ServiceProfile, rates_rps: npt.ArrayLike, batch_size: int, batch_timeout_ms: float, quantile: float
) -> np.ndarray:
    """The analytic ``quantile`` of time in the worker (ms) at each Poisson rate; inf where unstable."""
    lam = np.atleast_1d(np.asarray(rates_rps, dtype=float)) / 1000.0  # per ms
    cur = _Curves(profile, quantile)
    c, b, w = profile.slots, batch_size, batch_timeout_ms
    tail = 1 - quantile
    bf = np.full_like(lam, float(b))
    rho_b = lam * cur.mean(bf) / (c * b)
    stable = rho_b < 1
    lam_s = np.where(stable, lam, 1e-12)

    # 1. batch size: formation by timeout/size, or the fluid fixed point with every slot busy.
    n_form = np.minimum(b, 1 + lam_s * w)
    lo, hi = np.ones_like(lam), bf.copy()
    for _ in range(40):
        mid = (lo + hi) / 2
        ok = lam_s * cur.mean(mid) / c <= mid
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    n_fluid = np.where(lam_s * cur.mean(np.ones_like(lam)) / c <= 1, 1.0, hi)
    n = np.maximum(n_form, n_fluid)

    # 2. a request that finds a slot idle.
    wait_form = np.minimum(w, (b - 1) / lam_s) if b > 1 else np.zeros_like(lam)
    l_form = wait_form + cur.quant(n_form)

    # 3. a request that finds every slot busy: residual gap, then a batch of what the gap gathered.
    util = np.minimum(1.0, lam_s * cur.mean(n) / (c * n))
    p_busy = _erlang_c(c, util)
    l_gap = np.zeros_like(lam)
    rows = p_busy > tail
    if rows.any():
        lr, nr, pr = lam_s[rows], n[rows], p_busy[rows]
        gap_mean = cur.mean(nr) / c
        cv2 = np.maximum((c - 1) / (c + 1) + cur.cs2(nr) / c, 1e-3)
        k = 1 / cv2
        shape, scale = k + 1, gap_mean / k  # length-biased gamma(k) = gamma(k + 1), same scale
        h = 1 / (9 * shape)
        g = shape[:, None] * scale[:, None] * np.maximum(1 - h[:, None] + _GAP_Z[None, :] * np.sqrt(h)[:, None], 0) ** 3
        g = np.maximum(g, 1e-9)
        rows_n = np.clip(1 + lr[:, None] * g, 1, b)
        s = cur.med(rows_n)[:, :, None] * np.exp(cur.sigma(rows_n)[:, :, None] * _JIT_Z[None, None, :])
        gg = np.broadcast_to(g[:, :, None], s.shape)
        wts = _GAP_W[:, None] * _JIT_W[None, :]
        target = tail / pr
        x_lo = np.zeros_like(lr)
        x_hi = g.max(axis=1) + s.max(axis=(1, 2))
        for _ in range(40):
            x = (x_lo + x_hi) / 2
            p = (wts * (1 - np.clip((x[:, None, None] - s) / gg, 0, 1))).sum(axis=(1, 2))
            above = p > target
            x_lo = np.where(above, x, x_lo)
            x_hi = np.where(above, x_hi, x)
        l_gap[rows] = x_hi

    # 4. full batches queueing for a slot.
    l_block = np.zeros_like(lam)
    p_wait = _erlang_c(c, np.where(stable, rho_b, 0.0))
    rows = stable & (p_wait > tail)
    if rows.any():
        sb_mean = float(cur.mean(np.array([float(b)]))[0])
        sb_cs2 = float(cur.cs2(np.array([float(b)]))[0])
        theta = _lundberg(sb_mean, sb_cs2, c, b, lam_s[rows], rho_b[rows])
        l_block[rows] = np.log(p_wait[rows] / tail) / theta + float(cur.quant(np.array([float(b)]))[0])

    out = np.maximum(np.maximum(l_form, l_gap), l_block)
    return np.where(stable, out, math.inf)


def capacity_at_slo(
    profile: ServiceProfile,
    *,
    batch_size: int,
    batch_timeout_ms: float,
    rt_max_ms: float,
    sl_min: float,
    epsilon_ms: float = DEFAULT_EPSILON_MS,
    headroom: float = DEFAULT_HEADROOM,
) -> float:
    """Highest Poisson rate (req/s) up to which the modelled SLmin-quantile stays <= RTmax - eps, less headroom.

    "Up to": the first crossing on a rising rate grid (then refined), so every lower rate meets the
    SLO too; a planner may then load an instance with anything between zero and this. The crossing is
    then cut by ``headroom`` (a share of the rate): near saturation the quantile climbs so steeply that
    1% more load can add 20% latency, and profiles from a few hundred samples are not that exact.
    """
    _check_slo(rt_max_ms, sl_min, epsilon_ms)
    if not 0 <= headroom < 1:
        raise BatchingError(f"headroom must lie in [0, 1), got {headroom}")
    return _first_crossing(profile, batch_size, batch_timeout_ms, rt_max_ms - epsilon_ms, sl_min) * (1 - headroom)


def _first_crossing(
    profile: ServiceProfile, batch_size: int, batch_timeout_ms: float, budget: float, sl_min: float
) -> float:
    """First rate on a rising geometric grid whose quantile exceeds ``budget``, refined on a linear grid."""
    b = batch_size
    top = profile.slots * 1000.0 * b / profile.p50_ms(b)  # just past the stability limit (mean > p50), req/s
    grid = np.geomspace(top * 5e-4, top, _GRID_POINTS)
    ok = latency_quantile_ms(profile, grid, b, batch_timeout_ms, sl_min) <= budget
    if ok.all():
        return float(grid[-1])
    first_bad = int(np.argmin(ok))
    if first_bad == 0:
        return 0.0
    fine = np.linspace(grid[first_bad - 1], grid[first_bad], _GRID_POINTS)
    ok = latency_quantile_ms(profile, fine, b, batch_timeout_ms, sl_min) <= budget
    if ok.all():
        return float(fine[-1])
    return float(fine[max(int(np.argmin(ok)) - 1, 0)])


def batching_pays(profile: ServiceProfile, batch_size: int) -> bool:
    """b/T(b) > 1/T(1) on p50 figures: a bigger batch must raise throughput per slot."""
    return batch_size == 1 or batch_size / profile.p50_ms(batch_size) > 1 / profile.p50_ms(1)


def feasible_settings(
    profile: ServiceProfile, *, rt_max_ms: float, epsilon_ms: float = DEFAULT_EPSILON_MS
) -> tuple[tuple[int, float], ...]:
    """The (b, W) candidates: measured b where batching pays, W + T_p99(b) + eps <= RTmax, W on a fixed grid."""
    budget = rt_max_ms - epsilon_ms
    out: list[tuple[int, float]] = []
    for b in profile.batch_sizes:
        slack = budget - profile.p99_ms(b)
        if slack < 0 or not batching_pays(profile, b):
            continue
        if b == 1:
            out.append((1, 0.0))  # nothing to wait for
            continue
        # Rounded down to 0.1 ms, so that rounding never pushes W + T_p99(b) + eps past RTmax.
        out.extend((b, w) for w in sorted({math.floor(f * slack * 10) / 10 for f in TIMEOUT_FRACTIONS}))
    return tuple(out)


def plan_batching(
    profile: ServiceProfile,
    *,
    rt_max_ms: float,
    sl_min: float,
    usd_per_hour: float,
    epsilon_ms: float = DEFAULT_EPSILON_MS,
    headroom: float = DEFAULT_HEADROOM,
) -> BatchingPlan:
    """Every feasible (b, W) with its capacity at SLO and cost; the best is the highest capacity."""
    _check_slo(rt_max_ms, sl_min, epsilon_ms)
    if not (math.isfinite(usd_per_hour) and usd_per_hour >= 0):
        raise BatchingError(f"usd_per_hour must be >= 0, got {usd_per_hour}")
    p99_1 = profile.p99_ms(1)
    if p99_1 + epsilon_ms > rt_max_ms:
        return BatchingPlan(
            None,
            (),
            f"infeasible: T_p99(1) {p99_1:.1f} ms + eps {epsilon_ms:g} ms > RTmax {rt_max_ms:g} ms; "
            "no batch size can meet the SLO on this profile",
        )
    candidates: list[BatchingCandidate] = []
    for b, w in feasible_settings(profile, rt_max_ms=rt_max_ms, epsilon_ms=epsilon_ms):
        cap = capacity_at_slo(
            profile,
            batch_size=b,
            batch_timeout_ms=w,
            rt_max_ms=rt_max_ms,
            sl_min=sl_min,
            epsilon_ms=epsilon_ms,
            headroom=headroom,
        )
        usd = usd_per_hour / 3600.0 / cap * 1e6 if cap > 0 else math.inf
        candidates.append(BatchingCandidate(b, w, cap, usd, profile.p99_ms(b)))
    candidates.sort(key=lambda x: (-x.capacity_rps, x.batch_size, x.batch_timeout_ms))
    usable = [x for x in candidates if x.capacity_rps > 0]
    if not usable:
        return BatchingPlan(None, tuple(candidates), "infeasible: no (b, W) meets the SLO at any positive rate")
    best = usable[0]
    return BatchingPlan(
        best,
        tuple(candidates),
        f"b={best.batch_size}, W={best.batch_timeout_ms:g} ms: highest capacity at SLO of {len(candidates)} candidates",
    )
