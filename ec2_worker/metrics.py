"""Prometheus metrics named as Triton names them, so existing Triton dashboards work unchanged.

A small text-exposition registry rather than prometheus_client: Triton's counters have no
``_total`` suffix (``nv_inference_request_success``), which prometheus_client always appends. All
updates happen on the worker's event-loop thread, so plain integers and floats need no locks.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in items)
    return "{" + body + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, labels: Labels) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in self.values.items()]


class Gauge(Counter):
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = sorted(buckets)
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}  # labels -> (bucket counts, [sum])

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def render(self) -> list[str]:
        lines = self.header()
        for labels, (counts, total) in self.series.items():
            cum = 0
            for bound, c in zip(self.bounds, counts, strict=False):
                cum += c
                lines.append(f"{self.name}_bucket{_fmt_labels(labels, (('le', _num(bound)),))} {cum}")
            cum += counts[-1]
            lines.append(f"{self.name}_bucket{_fmt_labels(labels, (('le', '+Inf'),))} {cum}")
            lines.append(f"{self.name}_sum{_fmt_labels(labels)} {_num(total[0])}")
            lines.append(f"{self.name}_count{_fmt_labels(labels)} {cum}")
        return lines


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class WorkerMetrics:
    """The worker's metrics; label sets are ``(("model", m), ("version", v))``."""

    def __init__(self) -> None:
        self.request_success = Counter("nv_inference_request_success", "Number of successful inference requests")
        self.request_failure = Counter("nv_inference_request_failure", "Number of failed inference requests, by reason")
        self.inference_count = Counter("nv_inference_count", "Number of inferences performed (batch rows)")
        self.exec_count = Counter("nv_inference_exec_count", "Number of model executions (batches) performed")
        self.request_duration_us = Counter(
            "nv_inference_request_duration_us", "Cumulative end-to-end inference request handling time (us)"
        )
        self.queue_duration_us = Counter(
            "nv_inference_queue_duration_us", "Cumulative time requests spend waiting in the queue (us)"
        )
        self.compute_infer_duration_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time of the batches requests ran in (us)"
        )
        self.pending = Gauge("nv_inference_pending_request_count", "Requests accepted and not yet answered")
        self.late = Counter(
            "mark_inference_request_late", "Requests answered after their deadline (still answered, counted late)"
        )
        self.rejected = Counter(
            "mark_inference_request_rejected", "Requests refused with 503 because the queue was at its bound"
        )
        self.batch_size = Histogram("mark_inference_batch_size", "Rows per executed batch", BATCH_BUCKETS)
        self.request_duration = Histogram(
            "mark_inference_request_duration_seconds", "End-to-end request time in the worker", LATENCY_BUCKETS_S
        )
        self.queue_duration = Histogram(
            "mark_inference_queue_duration_seconds", "Time from arrival to batch dispatch", LATENCY_BUCKETS_S
        )
        self.compute_duration = Histogram(
            "mark_inference_compute_duration_seconds", "Model execution time per batch", LATENCY_BUCKETS_S
        )

    def families(self) -> list[_Family]:
        return [v for v in vars(self).values() if isinstance(v, _Family)]

    def render(self) -> str:
        lines: list[str] = []
        for fam in self.families():
            lines.extend(fam.render())
        return "\n".join(lines) + "\n"
