"""The shared vocabulary (DESIGN.md §6): one definition each, imported by every layer.

``Slo`` is the latency SLO every layer reads. ``Market`` and ``InstanceState`` are string enums,
so they compare equal to their EC2-style values
(``Market.SPOT == "spot"``) in catalogs, plans and YAML.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

# Numbers in configs: a boolean or a numeric string is refused (YAML's `true` is not 1), an int is a float.
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]


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


class Slo(BaseModel):
    """The latency SLO: at least ``sl_min`` of requests answered within ``rt_max_ms``.

    ``epsilon_ms`` is kept out of RTmax for the network and the front door's dispatch when the
    planners size capacity (MArk, SoCC'19 §4: ``W + T(b) + eps <= RTmax``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rt_max_ms: StrictFloat = Field(200.0, gt=0, le=60_000, description="RTmax: the latency bound (ms)")
    sl_min: StrictFloat = Field(0.98, gt=0, lt=1, description="SLmin: the share of requests within RTmax, e.g. 0.98")
    epsilon_ms: StrictFloat = Field(
        5.0, ge=0, le=60_000, description="network and dispatch margin kept out of RTmax (ms)"
    )

    @model_validator(mode="after")
    def _margin_fits(self) -> Slo:
        if self.epsilon_ms >= self.rt_max_ms:
            raise ValueError(f"epsilon_ms ({self.epsilon_ms:g}) must be below rt_max_ms ({self.rt_max_ms:g})")
        return self
