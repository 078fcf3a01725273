"""The shared vocabulary (DESIGN.md §6): one definition each, imported by every layer.

``Market`` and ``InstanceState`` are string enums, so they compare equal to their EC2-style values
(``Market.SPOT == "spot"``) in catalogs, plans and YAML.
"""

from __future__ import annotations

import enum


class Market(enum.StrEnum):
    """How an EC2 instance is bought: on-demand (fixed price) or spot (cheaper, can be reclaimed)."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"


MARKETS: tuple[str, ...] = tuple(m.value for m in Market)


class InstanceState(enum.StrEnum):
    PENDING = "pending"  # launched, booting: not serving yet
    RUNNING = "running"  # ready: serving requests
    DRAINING = "draining"  # interruption notice or scale-in: finishing its queue, no new work
    TERMINATED = "terminated"
