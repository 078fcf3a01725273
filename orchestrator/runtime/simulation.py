"""``mark simulate``'s composition: the trace window, one controller per policy, one simulated run each
in its own process (the runs are independent), progress while they go, results in policy order.

Each policy's run gets the same window, arrivals (same seed) and setup, except what the policy itself
is: the price its instances bill at (SageMaker's ml.* prices) and whether a Lambda function exists
(``Controller.uses_lambda``), so every figure differs only by the policy.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.config import DeploymentConfig
from orchestrator.controller.policies import build_controller, inputs_from_config
from orchestrator.controller.state import Controller
from orchestrator.economics.catalog import load_catalog
from orchestrator.economics.latency_profiles import profile_for, single_thread_batches
from orchestrator.sim.results import SimResult
from orchestrator.sim.runner import LambdaSettings, SimSetup, simulate
from orchestrator.workload.window import TraceWindow


@dataclass(frozen=True)
class SimulationPlan:
    """What ``mark simulate`` runs: ``policies`` over ``window`` for ``config``'s first model (or
    ``model``), ``seed`` for arrivals, service times and spot draws."""

    window: TraceWindow
    config: DeploymentConfig
    policies: tuple[str, ...]
    model: str
    seed: int = 0
    spot_hazard_per_hour: float = 0.0
    catalog_path: str | None = None  # None: the committed profiles/catalog.yaml
    profiles_dir: str | None = None  # latency profiles; None: the committed profiles/latency


def base_setup(plan: SimulationPlan) -> SimSetup:
    """The setup every policy shares (the catalog, SLO, allowed types, Lambda as configured)."""
    c = plan.config
    catalog = load_catalog(plan.catalog_path)
    profiles = {}
    lambda_batches = None
    if plan.profiles_dir is not None:  # the user's profiles, for the workers and the Lambda function alike
        d = Path(plan.profiles_dir)
        profiles = {t: profile_for(plan.model, t, catalog, d) for t in c.fleet.instance_types}
        lambda_batches = single_thread_batches(plan.model, d)[:1]
    return SimSetup(
        model=plan.model,
        slo=c.slo,
        catalog=catalog,
        instance_types=tuple(c.fleet.instance_types),
        profiles=profiles,
        lambda_=LambdaSettings(enabled=c.lambda_.enabled, memory_mb=c.lambda_.memory_mb, batches=lambda_batches),
        spot_hazard_per_hour={"*": plan.spot_hazard_per_hour} if plan.spot_hazard_per_hour else {},
        seed=plan.seed,
        epoch0_s=plan.window.epoch0_s,
        queue_bound=c.batching.max_queue,
        history=tuple(int(x) for x in plan.window.history),
        warm_start=True,  # each policy's first fleet is running when the window begins
    )


def controller_for(plan: SimulationPlan, policy: str) -> Controller:
    """The named controller, built from the deployment config (``static-peak`` sized for the window's
    peak second)."""
    inputs = inputs_from_config(plan.config, model=plan.model)
    inputs["catalog"] = load_catalog(plan.catalog_path)  # the same prices and boot times as the cloud
    inputs["profiles_dir"] = Path(plan.profiles_dir) if plan.profiles_dir else None
    if policy == "static-peak":
        inputs["peak_rps"] = float(plan.window.counts.max())
    if policy.startswith("sagemaker"):  # its first fleet as target tracking would have sized it for the
        # load the window begins with (its first minute: the trace before may be a collection gap)
        first = plan.window.counts[:60]
        inputs["initial_rps"] = float(first.mean()) if first.size else 0.0
    if policy == "oracle":
        inputs["oracle_boot"] = "zero"  # the lower bound: instances serve as soon as launched
    return build_controller(policy, **inputs)


def setup_for(controller: Controller, base: SimSetup) -> SimSetup:
    """The shared setup with what the policy is: its instances' price, whether Lambda exists, its boot
    times (the oracle's zero boot lag)."""
    lam = replace(base.lambda_, enabled=base.lambda_.enabled and controller.uses_lambda)
    return replace(
        base,
        lambda_=lam,
        price_source=controller.price_source,  # type: ignore[arg-type]
        boot_seconds={**base.boot_seconds, **controller.boot_seconds},
    )


def run_one(plan: SimulationPlan, policy: str, progress: Callable[[float], None] | None = None) -> SimResult:
    """One policy's simulated run (in this process)."""
    silence_solver_banner()
    controller = controller_for(plan, policy)
    return simulate(plan.window.counts, controller, setup_for(controller, base_setup(plan)), progress)


PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """In a worker or manager process: a daemon thread that ends this process within
    ``PARENT_CHECK_S`` once ``parent_pid`` (the ``mark simulate`` that started it) is gone, however it
    ended (SIGTERM and SIGKILL run no cleanup in the parent; without this its pool stayed behind,
    simulating for nobody)."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child(plan: SimulationPlan, policy: str, updates: Any) -> SimResult:
    return run_one(plan, policy, lambda f: updates.put((policy, f)))


@dataclass(frozen=True)
class Failure:
    """A policy whose run raised: its name and what went wrong (the other policies' results stand)."""

    policy: str
    error: str


def run_all(
    plan: SimulationPlan, jobs: int, on_progress: Callable[[dict[str, float]], None] | None = None
) -> tuple[list[SimResult], list[Failure]]:
    """Every policy of ``plan``, ``jobs`` at a time in separate processes; ``on_progress`` gets each
    policy's fraction done. Results in ``plan.policies`` order; a policy that raised is a
    :class:`Failure` and the others still run."""
    done: dict[str, float] = dict.fromkeys(plan.policies, 0.0)
    results: dict[str, SimResult] = {}
    failures: list[Failure] = []
    if jobs <= 1:
        for p in plan.policies:

            def report(f: float, p: str = p) -> None:
                done[p] = f
                if on_progress:
                    on_progress(done)

            try:
                results[p] = run_one(plan, p, report)
            except Exception as e:  # noqa: BLE001 - reported with its policy; the others still run
                failures.append(Failure(p, f"{type(e).__name__}: {e}"))
            done[p] = 1.0
    else:
        import os
        from multiprocessing.managers import SyncManager

        ctx = mp.get_context("spawn")  # a clean interpreter each: no inherited threads or sessions
        me = os.getpid()
        manager = SyncManager(ctx=ctx)
        manager.start(exit_with_parent, (me,))
        with manager, ProcessPoolExecutor(jobs, ctx, initializer=exit_with_parent, initargs=(me,)) as pool:
            updates = manager.Queue()
            futures = {p: pool.submit(_child, plan, p, updates) for p in plan.policies}
            while not all(f.done() for f in futures.values()):
                try:
                    policy, fraction = updates.get(timeout=0.5)
                    done[policy] = fraction
                except queue.Empty:
                    pass
                for p, f in futures.items():
                    if f.done():
                        done[p] = 1.0
                if on_progress:
                    on_progress(done)
            for p, f in futures.items():
                try:
                    results[p] = f.result()
                except Exception as e:  # noqa: BLE001
                    failures.append(Failure(p, f"{type(e).__name__}: {e}"))
    if on_progress:
        on_progress(done)
    return [results[p] for p in plan.policies if p in results], failures


def silence_solver_banner() -> None:
    """HiGHS prints its copyright banner on stdout when a process builds its first solver, before any
    option can turn output off: build that first one with stdout pointed at /dev/null."""
    import os
    import sys

    import highspy

    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def policy_names(requested: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """``all`` or names, deduplicated in the order of ``known`` for ``all`` and as given otherwise.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not requested or "all" in requested:  # "all" with names: all of them, once each
        return tuple(known)
    unknown = [p for p in requested if p not in known]
    if unknown:
        raise ValueError(f"--policy: unknown {', '.join(map(repr, unknown))}; choose from all, {', '.join(known)}")
    return tuple(dict.fromkeys(requested))
