"""The front door's online latency estimators, as pure update functions: state in, new state out.

- :func:`observe_slowdown`: the dispatcher's per-worker slowdown factor, a high quantile of the recent
  observed / predicted latency ratios (profiles are measured on an idle machine; a worker sharing its
  cores, or a noisy neighbour, is slower and jittery). A quantile, not the mean: the SLO is a quantile,
  and a prediction right on average sends half the borderline requests past their deadline.
- :func:`ewma`: the Lambda pool's warm round trip per model and cold start (milliseconds).

No clock and no I/O: the callers (``frontdoor/dispatcher.py``, ``cloud/local/lambda_pool.py``) measure
and keep the state; these functions only fold one observation in. The worker's service-time EWMA lives
in ``ec2_worker/discipline.py`` because the worker never imports ``orchestrator`` (the worker image must
not pull it in): that formula is the one not shared with this module.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOWDOWN_WINDOW = 128  # recent answers per worker behind its slowdown factor
SLOWDOWN_QUANTILE = 0.9
SLOWDOWN_RANGE = (0.5, 20.0)  # a single ratio is clamped to this range before it joins the window
SLOWDOWN_REFRESH = 8  # factor recomputed below 8 ratios and at lengths 8, 16, ... (every answer once full)
LAMBDA_EWMA_ALPHA = 0.2  # weight of the newest Lambda round trip or cold start


@dataclass(frozen=True)
class Slowdown:
    """One worker's slowdown: ``factor`` multiplies its profile's latency predictions (1 = as profiled).

    ``ratios``: the recent observed / unscaled-profile latency ratios, oldest first, at most
    ``SLOWDOWN_WINDOW`` of them.
    """

    factor: float = 1.0
    ratios: tuple[float, ...] = ()


def observe_slowdown(
    state: Slowdown,
    actual_ms: float,
    predicted_ms: float,
    *,
    window: int = SLOWDOWN_WINDOW,
    quantile: float = SLOWDOWN_QUANTILE,
) -> Slowdown:
    """The slowdown after one answer took ``actual_ms`` where ``predicted_ms`` was predicted.

    ``predicted_ms`` is the prediction as made, i.e. already scaled by ``state.factor``; the ratio kept
    is against the unscaled profile, ``factor * actual / predicted`` (``predicted_ms`` floored at
    0.1 ms), clamped to ``SLOWDOWN_RANGE``. The window keeps the last ``window`` ratios. The factor is
    the ``quantile`` of the window (the element at index ``int(quantile * len)`` of the sorted window,
    capped at the last), recomputed while the window holds fewer than ``SLOWDOWN_REFRESH`` ratios and
    whenever its length is a multiple of ``SLOWDOWN_REFRESH`` (so at every answer once a full window
    of 128 slides); otherwise it stays. ``state`` is unchanged.
    """
    low, high = SLOWDOWN_RANGE
    ratio = min(high, max(low, state.factor * actual_ms / max(predicted_ms, 0.1)))
    ratios = (*state.ratios, ratio)[-window:]
    factor = state.factor
    if len(ratios) % SLOWDOWN_REFRESH == 0 or len(ratios) < SLOWDOWN_REFRESH:
        ordered = sorted(ratios)
        factor = ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]
    return Slowdown(factor, ratios)


def ewma(previous: float | None, sample: float, alpha: float = LAMBDA_EWMA_ALPHA) -> float:
    """Exponentially weighted moving average: ``sample`` when nothing was seen before (``previous`` None),
    else ``previous + alpha * (sample - previous)``. Unit: the samples' own (the Lambda pool: ms)."""
    return sample if previous is None else previous + alpha * (sample - previous)
