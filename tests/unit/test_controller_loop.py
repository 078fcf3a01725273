"""The live controller's mechanism (orchestrator/controller/observe.py, loop.py) with a fake cloud, a fake
Lambda function and a fake front door (``tests/fakes.py``): observations follow the simulator's
conventions; the loop applies Launch / Drain / Terminate / Prewarm / SetBatching, logs one JSON line per
tick, turns every cloud error into a failure in the next observation, and stops cleanly on cancel.

``Scripted`` is a controller that returns the actions it is given for each tick and keeps every
observation it saw; one test runs the real step (``ours``-like milp context) to see a launch ahead of
a rising forecast and the decision-log line that explains it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.clock import ManualClock, ScaledClock
from orchestrator.controller.actions import Action, Drain, Launch, Prewarm, SetBatching, Terminate
from orchestrator.controller.forecasting import ForecastInputs
from orchestrator.controller.loop import ControlLoop
from orchestrator.controller.observe import ArrivalCounter, LiveObserver
from orchestrator.controller.policies import StepController
from orchestrator.controller.state import Observation, Tick
from orchestrator.controller.step import StepContext
from orchestrator.policy.planning import ON_DEMAND, milp
from orchestrator.types import InstanceState, Market
from tests import fakes

EPOCH0 = 1_700_000_040.0  # a whole epoch minute


@dataclass
class Scripted:
    """A controller whose tick k returns ``script[k]`` (nothing past its end); it keeps what it saw."""

    script: Sequence[Sequence[Action]] = ()
    interval_s: float = 60.0
    name: str = "scripted"
    future_s: int = 0
    seen: list[Observation] = field(default_factory=list)
    raise_at: int | None = None

    uses_lambda = True
    price_source = "ec2"
    boot_seconds: dict[str, float] = field(default_factory=dict)

    def initial_state(self) -> int:
        return 0

    def step(self, state: Any, observation: Observation) -> Tick:
        self.seen.append(observation)
        if self.raise_at == state:
            self.raise_at = None
            raise ZeroDivisionError("a bug in the step")
        actions = tuple(self.script[state]) if state < len(self.script) else ()
        observed = {"failures": [{"reason": f.reason, "message": f.message} for f in observation.failures]}
        return Tick(state, observation.now_s, actions, state + 1, observed=observed, expected_usd=float("nan"))


class FakeServing:
    def __init__(self) -> None:
        self.drained: list[str] = []
        self.outstanding: dict[str, int] = {}
        self.total = (0, 0)
        self.batching: tuple[int, float] | None = None

    def queued(self, instance_id: str) -> int:
        return self.outstanding.get(instance_id, 0)

    def answered(self) -> tuple[int, int]:
        return self.total

    def drain(self, instance_id: str) -> None:
        self.drained.append(instance_id)

    def set_batching(self, max_batch_size: int, batch_timeout_ms: float) -> None:
        self.batching = (max_batch_size, batch_timeout_ms)


def make(
    controller: Any,
    tmp_path: Path,
    *,
    cloud: fakes.FakeCloud | None = None,
    weight: float = 1.0,
    push: Any = None,
) -> tuple[ControlLoop, fakes.FakeCloud, fakes.FakeFunction, FakeServing, ArrivalCounter]:
    cloud = cloud or fakes.FakeCloud(ManualClock())
    function, serving = fakes.FakeFunction(), FakeServing()
    counter = ArrivalCounter(cloud.now, weight)
    observer = LiveObserver(cloud, counter, serving=serving, function=function, epoch0_s=EPOCH0)
    loop = ControlLoop(controller, cloud, observer, decision_log=tmp_path / "decisions.jsonl", push_batching=push)
    return loop, cloud, function, serving, counter


def lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]


# --- observe ----------------------------------------------------------------------------------------


def test_arrival_counter_counts_whole_seconds_weighted_and_gives_each_once() -> None:
    clock = ManualClock(5.2)
    c = ArrivalCounter(clock.now, weight=10.0)  # each request stands for 10 (time factor 0.1)
    for t in (5.3, 5.9, 6.1, 8.0, 8.5, 8.99):
        clock._now = t
        c.record()
    assert c.take(5) == ()  # second 5 is not complete at 5
    assert c.take(9) == (20, 10, 0, 30)  # seconds 5, 6, 7 (quiet: a zero, not a gap), 8
    assert c.take(9) == ()
    clock._now = 8.7  # a late read of a second already given joins the next one given
    c.record()
    assert c.take(10) == (10,)
    with pytest.raises(ValueError, match="weight"):
        ArrivalCounter(clock.now, 0.0)


def test_observation_follows_the_simulators_conventions(tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    cloud = fakes.FakeCloud(clock)
    a, b, c = cloud.add(), cloud.add(market=Market.SPOT), cloud.add(running=False)
    gone = cloud.add()
    cloud.die(gone)
    serving, function = FakeServing(), fakes.FakeFunction()
    serving.outstanding = {a: 3}
    function.idle, function.busy = 2, 1
    counter = ArrivalCounter(cloud.now, weight=10.0)
    observer = LiveObserver(cloud, counter, serving=serving, function=function, epoch0_s=EPOCH0, history=(7, 8))
    clock.advance(1.5)
    counter.record()
    clock.advance(1.0)  # now 2.5: seconds 0 and 1 are complete
    cloud.notice(b)
    serving.total = (4, 3)
    o = observer.observe(draining=frozenset({c}), tokens={c: "tok-1"})
    assert o.now_s == 2.0 and o.epoch_s == EPOCH0 + 2.0  # the whole second the arrivals end at
    assert o.arrivals == (7, 8, 0, 10)  # the history (first observation only), then seconds 0 and 1, weighted
    by_id = {m.instance_id: m for m in o.fleet}
    assert set(by_id) == {a, b, c}  # terminated instances are left out, as in the simulator
    assert by_id[a].queued == 3 and by_id[a].state == InstanceState.RUNNING
    assert by_id[b].notice_at_s == 2.5 and by_id[b].market == Market.SPOT
    assert by_id[c].draining and by_id[c].token == "tok-1" and by_id[c].state == InstanceState.PENDING
    assert (o.lambda_warm, o.lambda_busy) == (2, 1)
    assert (o.requests, o.within_slo) == (40, 30)  # answered since the last step, in workload units
    clock.advance(60.0)
    serving.total = (5, 3)
    o2 = observer.observe()
    assert o2.arrivals == (0,) * 60 and (o2.requests, o2.within_slo) == (10, 0)


# --- the loop applies actions and logs each tick --------------------------------------------------


def test_loop_applies_launch_drain_terminate_prewarm_and_logs_one_line_per_tick(tmp_path: Path) -> None:
    pushed: list[tuple[str, int, float]] = []

    async def push(inst: Any, b: int, w: float) -> None:
        pushed.append((inst.id, b, w))

    async def main() -> tuple[Any, ...]:
        cloud = fakes.FakeCloud(ManualClock(), boot_s=60.0)
        old = cloud.add()
        script = [
            [SetBatching("c5.large", 4, 10.0), Launch("c5.large", Market.ON_DEMAND, 2, "t0-c5"), Prewarm(3)],
            [Drain(old)],
            [Terminate(old)],
        ]
        ctl = Scripted(script)
        loop, cloud, function, serving, _ = make(ctl, tmp_path, cloud=cloud, push=push)
        await loop.tick()
        for _ in range(3):
            cloud.clock.advance(60.0)  # type: ignore[attr-defined]
            cloud.settle()
            await loop.tick()
            await asyncio.sleep(0)  # background actions (terminate, pre-warm) run between steps
        await loop.close()
        return loop, cloud, function, serving, ctl, old

    loop, cloud, function, serving, ctl, old = asyncio.run(main())
    assert ("launch", ("c5.large", Market.ON_DEMAND, 2)) in cloud.calls
    assert ("terminate", (old,)) in cloud.calls
    assert serving.drained == [old] and serving.batching == (4, 10.0)
    assert function.prewarm_calls == [3] and function.idle == 3  # topped up once to the level, then held
    # the launch's token is on its instances in the next observation (so the step counts it once)
    assert sorted(m.token for m in ctl.seen[1].fleet if m.token) == ["t0-c5", "t0-c5"]
    assert next(m for m in ctl.seen[2].fleet if m.instance_id == old).draining
    assert old not in {m.instance_id for m in ctl.seen[3].fleet}
    # batching: the running instance at tick 0, each launched one once it ran
    assert {p[0] for p in pushed} == {m.instance_id for m in ctl.seen[1].fleet} and len(pushed) == 3
    assert (loop.counts.launched, loop.counts.terminated, loop.counts.drained, loop.counts.failures) == (2, 1, 1, 0)
    log = lines(tmp_path)
    assert [x["tick"] for x in log] == [0, 1, 2, 3]  # one line per tick, in order
    assert log[0]["actions"][1] == {
        "action": "Launch",
        "instance_type": "c5.large",
        "market": "on-demand",
        "count": 2,
        "token": "t0-c5",
    }
    assert log[0]["expected_usd"] is None  # NaN is written as null: strict JSON


def test_a_cloud_error_comes_back_as_a_failure_in_the_next_observation(tmp_path: Path) -> None:
    async def main() -> tuple[Any, ...]:
        cloud = fakes.FakeCloud(ManualClock(), capacity=1)
        iid = cloud.add()
        cloud.fail_terminate = RuntimeError("throttled by the fake")
        script = [
            [Launch("c5.large", Market.ON_DEMAND, 1, "t0"), Terminate(iid), Terminate("i-nope")],
            [],
            [],
        ]
        ctl = Scripted(script)
        loop, *_ = make(ctl, tmp_path, cloud=cloud)
        for _ in range(2):
            await loop.tick()
            await asyncio.sleep(0)  # the background terminate runs
            cloud.clock.advance(60.0)  # type: ignore[attr-defined]
        cloud.fail_instances = RuntimeError("the cloud API is down")
        assert await loop.tick() is None  # observing failed: logged, the loop goes on
        cloud.fail_instances = None
        assert await loop.tick() is not None
        await loop.close()
        return ctl, loop

    ctl, loop = asyncio.run(main())
    failed = ctl.seen[1].failures
    assert [(type(f.action).__name__, f.reason) for f in failed] == [
        ("Launch", "capacity"),
        ("Terminate", "not_found"),
        ("Terminate", "error"),
    ]
    assert "holds 1 instances" in failed[0].message and failed[2].message == "throttled by the fake"
    assert ctl.seen[2].failures == ()  # each failure is reported once
    log = lines(tmp_path)
    assert [f["reason"] for f in log[1]["observed"]["failures"]] == ["capacity", "not_found", "error"]
    assert log[2]["error"] == "observe" and "the cloud API is down" in log[2]["message"]
    assert loop.counts.failures == 3 and loop.counts.step_errors == 1


def test_a_worker_that_exits_while_booting_is_a_failed_launch_and_a_step_bug_is_logged(tmp_path: Path) -> None:
    async def main() -> Scripted:
        ctl = Scripted([[Launch("c5.large", Market.ON_DEMAND, 1, "t0")]], raise_at=1)
        loop, cloud, *_ = make(ctl, tmp_path)
        await loop.tick()
        cloud.die(next(iter(loop.tokens)))
        assert await loop.tick() is None  # the step raised: an error line, state kept
        await loop.tick()
        await loop.close()
        return ctl

    ctl = asyncio.run(main())
    # the step that raised saw the failure; the state was kept, so the next step sees nothing new
    (f,) = ctl.seen[1].failures
    assert isinstance(f.action, Launch) and f.action.token == "t0" and "exited before it was ready" in f.message
    log = lines(tmp_path)
    assert log[1]["error"] == "step" and "ZeroDivisionError" in log[1]["message"]


def test_run_steps_every_interval_on_the_clouds_clock_and_stops_on_cancel(tmp_path: Path) -> None:
    async def main() -> tuple[ControlLoop, fakes.FakeCloud, asyncio.Task[None]]:
        clock = ScaledClock(time_factor=0.001)  # Δ = 60 virtual s = 0.06 real s
        cloud = fakes.FakeCloud(clock)
        ctl = Scripted([[Launch("c5.large", Market.ON_DEMAND, 1, "t0")]])
        loop, *_ = make(ctl, tmp_path, cloud=cloud)
        loop.wall_per_s = 0.001
        task = asyncio.get_running_loop().create_task(loop.run())
        while loop.counts.ticks < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop, cloud, task

    loop, cloud, task = asyncio.run(main())
    assert task.cancelled() and loop._log is None  # stopped, the decision log closed
    log = lines(tmp_path)
    assert len(log) == loop.counts.ticks >= 3
    at = [x["at_s"] for x in log]
    assert all(b - a >= 59 for a, b in zip(at, at[1:], strict=False)), at  # one step per Δ, none bunched


# --- the real step through the loop: a launch ahead of a rise, explained in the log ----------------


@dataclass(frozen=True)
class Rise:
    """Forecast 10 req/s until run second ``at``, then 150 req/s (every quantile alike)."""

    at: float
    name: str = "rise"
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)

    def initial_state(self) -> None:
        return None

    def forecast(self, inputs: ForecastInputs, state: Any) -> tuple[np.ndarray, Any]:
        t0 = inputs.epoch_s - EPOCH0
        rows = [[150.0 if t0 + (k + 1) * inputs.interval_s > self.at else 10.0] * 3 for k in range(inputs.steps)]
        return np.array(rows), state


def test_the_real_step_launches_one_boot_ahead_of_a_rise_and_the_log_explains_it(tmp_path: Path) -> None:
    pool = fakes.pool("c5.large", ON_DEMAND, 100.0, boot_seconds=120.0)
    ctx = StepContext(
        pools=(pool,),
        lambda_fn=fakes.lambda_option(usd_per_request=1e-4, concurrency_limit=4),
        planner=milp,
        planner_name="milp",
        forecaster=Rise(at=600.0),
        horizon_steps=6,
        min_instances=1,
        token_prefix="test-",
    )

    async def main() -> tuple[ControlLoop, fakes.FakeCloud]:
        cloud = fakes.FakeCloud(ManualClock(), boot_s=120.0)
        cloud.add()  # the deployment's initial instance
        loop, *_ = make(StepController("ours-test", ctx), tmp_path, cloud=cloud)
        for _ in range(10):
            await loop.tick()
            cloud.clock.advance(60.0)  # type: ignore[attr-defined]
            cloud.settle()
        await loop.close()
        return loop, cloud

    loop, cloud = asyncio.run(main())
    log = lines(tmp_path)
    first = next(x for x in log if any(a["action"] == "Launch" for a in x["actions"]))
    assert first["at_s"] == 600.0 - 120.0  # one boot ahead of the rise
    assert loop.counts.launched >= 1
    assert all(i.state == InstanceState.RUNNING for i in cloud.instances())  # they ran before the rise
    # the line that explains it: the forecast that rose, the plan, the action with its token
    assert first["forecast"][-1][1] == 150.0 and first["plan"]
    (tmp_path / "first_launch.json").write_text(json.dumps(first))


def test_capacity_error_through_the_real_step_backs_the_pool_off(tmp_path: Path) -> None:
    pool = fakes.pool("c5.large", ON_DEMAND, 100.0, boot_seconds=120.0)
    ctx = StepContext(
        pools=(pool,),
        lambda_fn=fakes.lambda_option(usd_per_request=1e-4),
        planner=milp,
        planner_name="milp",
        forecaster=Rise(at=0.0),
        horizon_steps=6,
    )

    async def main() -> ControlLoop:
        loop, cloud, *_ = make(StepController("ours-test", ctx), tmp_path, cloud=fakes.FakeCloud(capacity=0))
        for _ in range(3):
            await loop.tick()
            cloud.clock.advance(60.0)  # type: ignore[attr-defined]
        await loop.close()
        return loop

    loop = asyncio.run(main())
    log = lines(tmp_path)
    assert log[0]["actions"] and log[1]["observed"]["failures"][0]["reason"] == "capacity"
    assert not any(a["action"] == "Launch" for a in log[1]["actions"])  # the pool is backed off
    assert loop.counts.by_reason == {"capacity": 1}
