"""The rule layer that matches tasks to capabilities. Pure functions: every agent applies them to
itself; nothing central runs them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .models import AgentCard, CapabilitySpec, Task, TaskRecord


def can_serve_route(capabilities: Iterable[str], requires: Iterable[str]) -> bool:
    """True when ``capabilities`` cover a route's required capabilities."""
    return set(requires) <= set(capabilities)


def missing(capabilities: Iterable[str], requires: Iterable[str]) -> tuple[str, ...]:
    """Required capabilities absent from ``capabilities``, sorted."""
    return tuple(sorted(set(requires) - set(capabilities)))


def unroutable(cards: Iterable[AgentCard], requires: Iterable[str]) -> tuple[str, ...] | None:
    """None when some live agent has all of ``requires``; otherwise what is missing.

    If every capability exists but on different agents, the whole set is named: no single agent
    can take the task.
    """
    needed = set(requires)
    if not needed:
        return None  # any agent will do, whenever one comes
    everything: set[str] = set()
    for card in cards:
        if needed <= card.capability_names:
            return None
        everything |= card.capability_names
    return missing(everything, needed) or tuple(sorted(needed))


def unroutable_because(cards: Iterable[AgentCard], task: Task) -> tuple[tuple[str, ...], str] | None:
    """None when some live agent can take ``task`` (its capabilities and its kind); otherwise the
    capabilities nobody announces (empty when only the kind is missing) and the reason in words."""
    cards = list(cards)
    lacking = unroutable(cards, task.requires)
    if lacking is not None:
        return lacking, f"no live agent has {_listed(lacking)}"
    if not cards or any(card.can_take(task) for card in cards):
        return None  # (a task that requires nothing waits for any agent, whenever one comes)
    with_caps = f" with {_listed(task.requires)}" if task.requires else ""
    return (), f"no live agent handles kind {task.kind!r}{with_caps}"


def declined_by_all(
    cards: Iterable[AgentCard], record: TaskRecord, now: datetime | None = None
) -> tuple[tuple[str, ...], str] | None:
    """Like ``unroutable_because``, and also when every live agent able to take the task has
    declined it with the offer it makes now (as of ``now``: a 'not now' lapses): then the reason
    names them and why."""
    cards = list(cards)
    because = unroutable_because(cards, record.task)
    if because is not None:
        return because
    able = {card.id for card in cards if card.can_take(record.task)}
    if not able or not all(record.declined(card, now) for card in cards if card.id in able):
        return None  # (nobody able at all is unroutable_because's to say, or any agent's to come)
    notes = [f"{d.agent}: {d.reason}" for d in record.declines if d.agent in able]
    shown = "; ".join(notes[:_DECLINERS_NAMED])
    if len(notes) > _DECLINERS_NAMED:
        shown += f"; and {len(notes) - _DECLINERS_NAMED} more"
    return (), f"declined by every live agent able to take it ({shown})"


_DECLINERS_NAMED = 5
"""Decliners a reason names (the record keeps them all): a reason stays short."""


def _listed(capabilities: Iterable[str]) -> str:
    return "[" + ", ".join(capabilities) + "]"


def rank(cards: Iterable[AgentCard], requires: Iterable[str], kind: str | None = None) -> list[AgentCard]:
    """Live agents able to serve ``requires`` (and handling ``kind``, if given), least loaded (by
    load/capacity) first."""
    needed = set(requires)
    able = [
        card for card in cards if needed <= card.capability_names and (kind is None or card.handles(kind))
    ]
    return sorted(able, key=lambda card: (card.load / card.capacity, card.id))


@dataclass(frozen=True)
class Verdict:
    """An agent's own decision about one task. A decline with ``retry_after`` (seconds) is a
    "not now" (as ``Decline(retry_after=)``): it lapses, and the task may come back to the agent."""

    accept: bool
    reason: str = ""
    retry_after: float | None = None


AT_CAPACITY_RETRY_S = 1.0
"""How long a decline for being at capacity stands: load passes, it is "not now", not "never"."""


def decide(capabilities: Iterable[CapabilitySpec], load: int, capacity: int, task: Task) -> Verdict:
    """The default rule an agent applies before working on ``task``.

    Decline when a required capability is missing (a misrouted ticket), when the agent is already at
    capacity, or when the task's payload asks for more than a capability's announced limit: a
    payload ``{"limits": {"<capability>.<limit>": value}}`` must not exceed the limit of that name.
    """
    specs = {spec.name: spec for spec in capabilities}
    lacking = missing(specs, task.requires)
    if lacking:
        return Verdict(False, f"lacks capability {', '.join(lacking)}")
    if load >= capacity:
        return Verdict(False, f"at capacity ({load}/{capacity})", retry_after=AT_CAPACITY_RETRY_S)
    asked = task.payload.get("limits") if isinstance(task.payload, dict) else None
    if isinstance(asked, dict):
        for key, value in asked.items():
            cap, _, limit = str(key).partition(".")
            bound = specs[cap].limits.get(limit) if cap in specs else None
            if bound is not None and isinstance(value, int | float) and value > bound:
                return Verdict(False, f"{key}={value} exceeds this agent's limit {bound}")
    return Verdict(True)
