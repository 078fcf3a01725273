"""Trivial controllers for the simulator's tests: a static fleet and a script of actions by time.

The real controllers live in ``orchestrator/controller/``; these only exercise the mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.controller.actions import Action, Launch
from orchestrator.controller.state import Observation, Tick
from orchestrator.economics.latency_profiles import TypeProfile
from orchestrator.types import Market


@dataclass
class Scripted:
    """Applies ``script[t]`` (a sequence of actions) at the step at time t; records every observation."""

    script: Mapping[float, Sequence[Action]] = field(default_factory=dict)
    interval_s: float = 60.0
    future_s: int = 0
    name: str = "scripted"
    forecast: tuple[tuple[float, ...], ...] | None = None  # returned by every step, when given
    quantiles: tuple[float, ...] = ()
    seen: list[Observation] = field(default_factory=list)
    uses_lambda: bool = True
    price_source: str = "ec2"
    boot_seconds: Mapping[str, float] = field(default_factory=dict)

    def initial_state(self) -> Any:
        return 0

    def step(self, state: Any, observation: Observation) -> Tick:
        self.seen.append(observation)
        actions = tuple(self.script.get(observation.now_s, ()))
        return Tick(
            tick=state,
            at_s=observation.now_s,
            actions=actions,
            state=state + 1,
            forecast=self.forecast,
            quantiles=self.quantiles,
        )


def static_fleet(instance_type: str, count: int, market: Market = Market.ON_DEMAND, **kw: Any) -> Scripted:
    """Launch ``count`` instances at t = 0 (they serve after the boot time), then nothing."""
    return Scripted({0.0: [Launch(instance_type, market, count, token="static")]}, name="static", **kw)


def det_profile(instance_type: str, rows: Sequence[tuple[int, float]], slots: int = 1) -> TypeProfile:
    """A hand-made profile: deterministic service (p50 == p99) of ``ms`` per batch of ``b``, ``(b, ms)``."""
    return TypeProfile(
        "test",
        instance_type,
        slots,
        1,
        tuple((b, float(ms), float(ms)) for b, ms in rows),
        "estimated",
        "hand-made for a test",
        "nowhere",
    )
