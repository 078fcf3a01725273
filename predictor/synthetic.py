"""Synthetic request traces: four families of load shape for training and leave-one-trace-out tests.

Each family returns a :class:`predictor.traces.Trace` of per-second request counts (Poisson draws of a
per-second rate, or for ``sparse`` bursts of whole requests), ``days`` long, with no clock
(``start_epoch_s`` None, like the count files) and no gaps. Pure numpy; the same ``seed`` gives the same
trace. Every phase (time of the daily peak, burst times) is drawn from the seed, so no family carries a
fixed clock schedule a model could memorise.

Families (rates in requests per second; the figures are this module's choices, picked to span the
shapes a serving system meets, not measured from a service):

- ``diurnal``: ``mean_rate`` (80) x (1 + ``amplitude`` (0.6) sin(2 pi t / 1 day + phase)) x a slow
  multiplicative noise (log-AR(1) per minute, lag-1 correlation 0.95, stationary sd ``noise_sd`` 0.15).
  Mean about 80 req/s, daily swing 32-128 req/s before noise.
- ``weekly``: the diurnal shape (``mean_rate`` 120, amplitude 0.5) times a weekday/weekend factor: 1 on
  five days, ``weekend_factor`` (0.45) on two, with one-hour ramps between. Mean about 100 req/s.
- ``flash``: a mild diurnal base (``base_rate`` 40, amplitude 0.3) plus flash crowds: ``bursts_per_day``
  (6) on average, starting at uniformly random seconds (a Poisson process), each multiplying the rate
  by a factor log-uniform in [``min_factor``, ``max_factor``] = [5, 50] with a 30-90 s rise, a plateau
  of 1-10 minutes and an exponential decay of 1-5 minutes. Mean about 50-60 req/s.
- ``sparse`` (on/off): minutes are on or off by a two-state Markov chain (an on minute stays on with
  probability 0.6; the stationary on share is ``on_share`` 0.3, so about 70 % of minutes are empty). An
  on minute holds one burst of a uniform integer 5-60 requests spread over 1-10 consecutive seconds at
  a random place in the minute. Mean about 0.16 req/s (32.5 requests per on minute).

Errors: :func:`make` raises ``ValueError`` for an unknown family or a non-positive ``days``;
:func:`parse_spec` for a malformed ``FAMILY[:DAYS]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from predictor.traces import Trace

DAY_S = 86400
DEFAULT_DAYS = 21.0


def _seconds(days: float) -> int:
    if not days > 0:
        raise ValueError(f"days must be positive, got {days}")
    return int(round(days * DAY_S / 60)) * 60  # whole minutes


def _slow_noise(rng: np.random.Generator, minutes: int, sd: float, rho: float = 0.95) -> np.ndarray:
    """Per-minute multiplicative noise exp(AR(1)) with stationary sd ``sd`` of the log, mean ~1."""
    eps = rng.normal(0.0, sd * np.sqrt(1 - rho * rho), minutes)
    x = np.empty(minutes)
    prev = rng.normal(0.0, sd)
    for i in range(minutes):  # 30k minutes: fast enough in a plain loop
        prev = rho * prev + eps[i]
        x[i] = prev
    return np.exp(x - sd * sd / 2)


def _per_second(per_minute_rate: np.ndarray) -> np.ndarray:
    return np.repeat(per_minute_rate, 60)


def _diurnal_rate(rng: np.random.Generator, n: int, mean_rate: float, amplitude: float, noise_sd: float) -> np.ndarray:
    """Per-second rate of the diurnal family (length n seconds)."""
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n, dtype=np.float64)
    shape = 1 + amplitude * np.sin(2 * np.pi * t / DAY_S + phase)
    return mean_rate * shape * _per_second(_slow_noise(rng, n // 60, noise_sd))


def _trace(rate: np.ndarray, rng: np.random.Generator, source: str) -> Trace:
    return Trace(rng.poisson(np.maximum(rate, 0.0)).astype(np.float64), source)


def diurnal(
    days: float = DEFAULT_DAYS, seed: int = 0, mean_rate: float = 80.0, amplitude: float = 0.6, noise_sd: float = 0.15
) -> Trace:
    """Sinusoidal daily cycle with slow noise; see the module docstring. Per-second counts, ``days`` long."""
    rng = np.random.default_rng([seed, 1])
    n = _seconds(days)
    return _trace(
        _diurnal_rate(rng, n, mean_rate, amplitude, noise_sd), rng, f"synthetic diurnal {days:g} d seed {seed}"
    )


def weekly(
    days: float = DEFAULT_DAYS,
    seed: int = 0,
    mean_rate: float = 120.0,
    amplitude: float = 0.5,
    noise_sd: float = 0.15,
    weekend_factor: float = 0.45,
) -> Trace:
    """The diurnal shape times a weekday (1) / weekend (``weekend_factor``) factor with one-hour ramps."""
    rng = np.random.default_rng([seed, 2])
    n = _seconds(days)
    rate = _diurnal_rate(rng, n, mean_rate, amplitude, noise_sd)
    first = int(rng.integers(0, 7))  # which weekday the trace starts on
    day_index = (np.arange(n) // DAY_S + first) % 7
    week = np.where(day_index >= 5, weekend_factor, 1.0)
    ramp = 3600
    kernel = np.ones(ramp) / ramp
    smooth = np.convolve(np.concatenate((np.full(ramp, week[0]), week, np.full(ramp, week[-1]))), kernel, "same")
    rate *= smooth[ramp : ramp + n]
    return _trace(rate, rng, f"synthetic weekly {days:g} d seed {seed}")


def flash(
    days: float = DEFAULT_DAYS,
    seed: int = 0,
    base_rate: float = 40.0,
    amplitude: float = 0.3,
    bursts_per_day: float = 6.0,
    min_factor: float = 5.0,
    max_factor: float = 50.0,
) -> Trace:
    """A mild diurnal base plus flash crowds of ``min_factor``-``max_factor`` x at random times."""
    rng = np.random.default_rng([seed, 3])
    n = _seconds(days)
    base = _diurnal_rate(rng, n, base_rate, amplitude, 0.1)
    extra = np.zeros(n)
    k = int(rng.poisson(bursts_per_day * n / DAY_S))
    for start in np.sort(rng.integers(0, n, k)):
        factor = float(np.exp(rng.uniform(np.log(min_factor), np.log(max_factor))))
        rise, hold, decay = int(rng.integers(30, 91)), int(rng.integers(60, 601)), float(rng.uniform(60, 300))
        tail = int(5 * decay)
        env = np.concatenate((np.linspace(0, 1, rise, endpoint=False), np.ones(hold), np.exp(-np.arange(tail) / decay)))
        end = min(n, int(start) + env.size)
        extra[start:end] = np.maximum(extra[start:end], (factor - 1) * env[: end - int(start)])
    return _trace(base * (1 + extra), rng, f"synthetic flash {days:g} d seed {seed}")


def sparse(days: float = DEFAULT_DAYS, seed: int = 0, on_share: float = 0.3, stay_on: float = 0.6) -> Trace:
    """On/off traffic: about ``1 - on_share`` of minutes empty, each on minute one burst of 5-60 requests."""
    rng = np.random.default_rng([seed, 4])
    n = _seconds(days)
    minutes = n // 60
    turn_on = (1 - stay_on) * on_share / (1 - on_share)  # keeps the stationary on share at on_share
    u = rng.random(minutes)
    on = np.zeros(minutes, dtype=bool)
    state = bool(rng.random() < on_share)
    for i in range(minutes):
        state = u[i] < (stay_on if state else turn_on)
        on[i] = state
    out = np.zeros((minutes, 60))
    idx = np.flatnonzero(on)
    sizes = rng.integers(5, 61, idx.size)
    spans = rng.integers(1, 11, idx.size)
    for m, size, span in zip(idx, sizes, spans, strict=True):
        first = int(rng.integers(0, 61 - span))
        out[m, first : first + span] = rng.multinomial(int(size), np.full(span, 1.0 / span))
    return Trace(out.reshape(-1), f"synthetic sparse {days:g} d seed {seed}")


FAMILIES: dict[str, Callable[..., Trace]] = {"diurnal": diurnal, "weekly": weekly, "flash": flash, "sparse": sparse}


def make(family: str, days: float = DEFAULT_DAYS, seed: int = 0) -> Trace:
    """One family's trace with its default parameters. Raises ``ValueError`` for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](days=days, seed=seed)


def parse_spec(spec: str) -> tuple[str, float]:
    """``FAMILY[:DAYS]`` -> (family, days); days default to ``DEFAULT_DAYS``. Raises ``ValueError``."""
    family, _, days = spec.partition(":")
    if family not in FAMILIES:
        raise ValueError(f"--synthetic {spec!r}: unknown family {family!r}; known: {', '.join(FAMILIES)}")
    try:
        d = float(days) if days else DEFAULT_DAYS
    except ValueError:
        raise ValueError(f"--synthetic {spec!r}: DAYS must be a number") from None
    if not d > 0:
        raise ValueError(f"--synthetic {spec!r}: DAYS must be positive")
    return family, d
