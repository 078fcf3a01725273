"""Reconcile (DESIGN.md §3 "Controller", step 4), pure: what the plan wants vs what exists and what
was already asked for, as actions (data, not calls).

The controller's memory of what it asked for is the :class:`Book` (part of the controller's state):

- *pending launches* (by idempotency token): a launch counts as booting capacity until instances with
  its token appear in the fleet, a failure for it is observed, or it is overdue (boot + a timeout:
  the cloud lost it); so the same observation seen twice launches nothing twice;
- instances asked to *drain* and to *terminate*: never asked twice; an instance is terminated only
  once an observation *after* the drain shows it draining with an empty queue (``queued == 0``):
  never with work in flight;
- noticed spot instances already *replaced*; pools *backed off* after a launch failed for lack of
  capacity or quota (the planner avoids them until then: the next plan falls back to another pool);
- the Lambda pre-warm level last asked for, and whether the batching settings were sent.

:func:`fold` brings the book up to date with an observation (failures, instances that appeared or
went); :func:`issue_launches` turns launches into ``Launch`` actions with tokens and pending entries
(capped by the fleet's maximum); :func:`reconcile` turns the rest of a plan into actions: launches
(topped up to the fleet's minimum), drains (not below the minimum; an instance whose 60 s minimum
billing is not yet spent is kept: it costs nothing more until then and the next plan may want it),
terminations of drained instances, pre-warm and batching.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from orchestrator.controller.actions import Action, Drain, Launch, Prewarm, SetBatching, Terminate
from orchestrator.controller.state import FleetMember, Observation
from orchestrator.types import InstanceState, Market

BACKOFF_REASONS = frozenset({"capacity", "quota"})  # a failed launch for these backs its pool off


@dataclass(frozen=True)
class PendingLaunch:
    """A launch asked for and not yet seen whole in the fleet: ``seen`` instances with its token so far."""

    token: str
    instance_type: str
    market: str
    count: int
    issued_at_s: float
    seen: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.instance_type, self.market)

    @property
    def remaining(self) -> int:
        return max(0, self.count - self.seen)


@dataclass(frozen=True)
class Book:
    """What the controller asked for and has not yet seen done (see the module docstring). Times are
    seconds on the run's clock; ``backoff`` entries are ``(instance_type, market, until_s)``."""

    pending: tuple[PendingLaunch, ...] = ()
    draining: tuple[tuple[str, float], ...] = ()  # (instance id, when the drain was asked)
    terminating: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()  # noticed spot instances already answered
    backoff: tuple[tuple[str, str, float], ...] = ()
    prewarm: int | None = None  # environments last asked to hold warm (None: never asked)
    batching_sent: bool = False

    def blocked(self, now_s: float) -> frozenset[tuple[str, str]]:
        """Pools backed off at ``now_s``."""
        return frozenset((t, m) for t, m, until in self.backoff if until > now_s)

    @property
    def draining_ids(self) -> frozenset[str]:
        return frozenset(i for i, _ in self.draining)


@dataclass(frozen=True)
class Limits:
    """The fleet's bounds (``DeploymentConfig.fleet``) and EC2's minimum billing per launch (s)."""

    min_instances: int = 0
    max_instances: int = 1000
    min_billed_seconds: float = 60.0


def _gone(m: FleetMember) -> bool:
    return m.state == InstanceState.TERMINATED


def fold(
    book: Book,
    obs: Observation,
    *,
    boot_seconds: Mapping[tuple[str, str], float],
    backoff_s: float,
    pending_timeout_s: float,
) -> Book:
    """The book after ``obs``: failed actions, launches that appeared or are overdue, instances gone.

    A failed launch drops its pending entry and, for ``capacity`` or ``quota``, backs its pool off until
    ``failure.at_s + backoff_s`` (from the failure's own time, so folding the same observation twice
    gives the same book). A failed terminate or drain is forgotten, so a later step asks again."""
    pending = {p.token: p for p in book.pending}
    draining = dict(book.draining)
    terminating = set(book.terminating)
    backoff = {(t, m): until for t, m, until in book.backoff}
    for f in obs.failures:
        a = f.action
        if isinstance(a, Launch):
            pending.pop(a.token, None)
            if f.reason in BACKOFF_REASONS:
                key = (a.instance_type, str(a.market))
                backoff[key] = max(backoff.get(key, -math.inf), f.at_s + backoff_s)
        elif isinstance(a, Terminate):
            terminating.discard(a.instance_id)
        elif isinstance(a, Drain):
            draining.pop(a.instance_id, None)
    tokens: dict[str, int] = {}
    for m in obs.fleet:
        if m.token:
            tokens[m.token] = tokens.get(m.token, 0) + 1
    kept: list[PendingLaunch] = []
    for p in pending.values():
        p = replace(p, seen=max(p.seen, tokens.get(p.token, 0)))
        overdue = obs.now_s - p.issued_at_s > boot_seconds.get(p.key, 0.0) + pending_timeout_s
        if p.remaining > 0 and not overdue:
            kept.append(p)
    alive = {m.instance_id for m in obs.fleet if not _gone(m)}
    return replace(
        book,
        pending=tuple(kept),
        draining=tuple((i, at) for i, at in draining.items() if i in alive),
        terminating=tuple(sorted(i for i in terminating if i in alive)),
        replaced=tuple(i for i in book.replaced if i in alive),
        backoff=tuple(sorted((t, m, u) for (t, m), u in backoff.items() if u > obs.now_s)),
    )


def active_members(obs: Observation, book: Book) -> list[FleetMember]:
    """Instances serving or about to: not terminated, not draining (observed or asked), no spot notice,
    not being terminated."""
    out_ids = book.draining_ids | set(book.terminating)
    return [
        m
        for m in obs.fleet
        if not _gone(m)
        and not m.draining
        and m.state != InstanceState.DRAINING
        and m.notice_at_s is None
        and m.instance_id not in out_ids
    ]


def active_count(obs: Observation, book: Book) -> int:
    """Active instances plus launches still pending: what ``min_instances`` and ``max_instances`` bound."""
    return len(active_members(obs, book)) + sum(p.remaining for p in book.pending)


def issue_launches(
    book: Book,
    launches: Iterable[tuple[str, str, int]],
    *,
    now_s: float,
    token: str,
    room: int,
) -> tuple[tuple[Launch, ...], Book, int]:
    """``Launch`` actions for ``(type, market, count)`` entries (merged per pool, in order), at most
    ``room`` instances in all; each gets the token ``f"{token}-{type}-{market}"`` and a pending entry.
    Returns (actions, book, instances left out by the cap)."""
    merged: dict[tuple[str, str], int] = {}
    for ty, mk, n in launches:
        if n > 0:
            merged[(ty, mk)] = merged.get((ty, mk), 0) + n
    actions: list[Launch] = []
    pending = list(book.pending)
    capped = 0
    left = max(0, room)
    for (ty, mk), n in merged.items():
        k = min(n, left)
        capped += n - k
        left -= k
        if k <= 0:
            continue
        tok = f"{token}-{ty}-{mk}"
        actions.append(Launch(ty, Market(mk), k, tok))
        pending.append(PendingLaunch(tok, ty, mk, k, now_s))
    return tuple(actions), replace(book, pending=tuple(pending)), capped


@dataclass(frozen=True)
class Desired:
    """What the step wants done now: the plan's launches (``(type, market, count)``, on top of what is
    pending), the instances the plan lets go, the instances to drain whatever the plan says (spot
    notices), the Lambda environments to hold warm (None: no decision), the batching settings."""

    launches: tuple[tuple[str, str, int], ...] = ()
    terminations: tuple[str, ...] = ()
    drain_now: tuple[str, ...] = ()
    prewarm: int | None = None
    batching: tuple[SetBatching, ...] = ()


@dataclass(frozen=True)
class Reconciled:
    """The actions, the new book and what a reader of the decision log should know: instances kept
    for their unspent minimum billing or for ``min_instances``, launches left out by ``max_instances``,
    launches added for ``min_instances``."""

    actions: tuple[Action, ...]
    book: Book
    kept_min_billed: tuple[str, ...] = ()
    kept_min_instances: tuple[str, ...] = ()
    capped: int = 0
    topped_up: int = 0


def reconcile(
    desired: Desired,
    obs: Observation,
    book: Book,
    limits: Limits,
    *,
    token: str,
    top_up_pool: tuple[str, str] | None,
) -> Reconciled:
    """Actions that move the fleet toward ``desired`` (see the module docstring for the rules).

    ``book`` must already be folded with ``obs`` (:func:`fold`). ``top_up_pool``: where launches for
    ``min_instances`` go (the cheapest pool per request the step may launch into; None: none). Order of
    the actions: batching, launches, drains, terminations, pre-warm."""
    now = obs.now_s
    actions: list[Action] = []
    if desired.batching and not book.batching_sent:
        actions += desired.batching
        book = replace(book, batching_sent=True)

    # Launches: the plan's, capped by max_instances, topped up to min_instances.
    active = active_count(obs, book)
    want = list(desired.launches)
    planned = sum(n for _, _, n in want if n > 0)
    topped = 0
    if top_up_pool is not None and active + planned < limits.min_instances:
        topped = limits.min_instances - active - planned
        want.append((*top_up_pool, topped))
    launched, book, capped = issue_launches(
        book, want, now_s=now, token=f"{token}p", room=limits.max_instances - active
    )
    actions += launched
    active += sum(a.count for a in launched)

    # Drains: spot notices always; the plan's terminations unless the minimum billing is unspent or the
    # fleet would drop below min_instances.
    members = {m.instance_id: m for m in obs.fleet if not _gone(m)}
    asked = book.draining_ids | set(book.terminating)
    drains: list[str] = []
    for i in desired.drain_now:
        if i in members and i not in asked and i not in drains:
            drains.append(i)
    kept_billed: list[str] = []
    kept_min: list[str] = []
    active_ids = {m.instance_id for m in active_members(obs, book)}
    for i in desired.terminations:
        m = members.get(i)
        if m is None or i in asked or i in drains or i not in active_ids:
            continue
        if now - m.launched_at_s < limits.min_billed_seconds:
            kept_billed.append(i)
            continue
        if active - 1 < limits.min_instances:
            kept_min.append(i)
            continue
        drains.append(i)
        active -= 1
    actions += [Drain(i) for i in drains]
    draining = dict(book.draining)
    draining.update((i, now) for i in drains)

    # Terminations: instances asked to drain before this observation, now draining with an empty queue.
    terminate = [
        i
        for i, at in sorted(book.draining)
        if at < now
        and i in members
        and i not in book.terminating
        and (members[i].draining or members[i].state == InstanceState.DRAINING)
        and members[i].queued == 0
    ]
    actions += [Terminate(i) for i in terminate]
    book = replace(
        book,
        draining=tuple(sorted(draining.items())),
        terminating=tuple(sorted({*book.terminating, *terminate})),
    )

    if desired.prewarm is not None and desired.prewarm != book.prewarm:
        actions.append(Prewarm(desired.prewarm))
        book = replace(book, prewarm=desired.prewarm)
    return Reconciled(tuple(actions), book, tuple(kept_billed), tuple(kept_min), capped, topped)
