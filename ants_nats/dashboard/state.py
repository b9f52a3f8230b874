"""What the dashboard knows of the swarm: one in-memory model per dashboard process.

Every change the feeds bring in goes through one ``on_...`` method, which updates the model and
returns the delta to send to the browsers (or None when nothing visible changed). A new browser
tab gets ``snapshot()`` and then the deltas; both are plain JSON-able dicts. Nothing here does I/O,
so the model is tested without a server.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..cards import CardChange
from ..models import AgentCard, AgentLedger, Route, TaskRecord, TrailEvent, utcnow
from ..names import trail_topic
from ..trail import Scent
from .tasks import TaskIndex

Json = dict[str, Any]
"""A JSON object as the browser receives it."""

RECENT_EVENTS = 500
"""Trail events a new tab receives (the trail view keeps about as many)."""

PREVIEW_CHARS = 80
"""Longest result preview in a task summary (the task view fetches the whole record)."""

_SUBMITTED_KEPT = 20_000
"""Submission times remembered to measure latency; older ones are forgotten first."""


def task_summary(record: TaskRecord) -> Json:
    """The fields of a record the overview needs: no payload, and the result only as a preview."""
    task = record.task
    preview = None
    if record.result_ref is not None:
        preview = f"<artifact {record.result_ref.name} ({record.result_ref.size} bytes)>"
    elif record.result is not None:
        text = json.dumps(record.result, separators=(",", ":"))
        preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
    return {
        "id": task.id,
        "kind": task.kind,
        "requires": list(task.requires),
        "route": task.route,
        "depends_on": list(task.depends_on),
        "dependents": list(record.dependents),
        "waiting_on": list(record.waiting_on),
        "priority": task.priority,
        "status": record.status.value,
        "holder": record.holder,
        "attempts": len(record.attempts),
        "counted_attempts": record.counted_attempts,
        "max_attempts": task.max_attempts,
        "error": record.error,
        "unroutable": None if record.unroutable is None else list(record.unroutable),
        "unroutable_reason": record.unroutable_reason,
        "result_preview": preview,
        "updated_at": record.updated_at.isoformat(),
    }


def card_json(card: AgentCard) -> Json:
    """An agent card as the browser shows it."""
    return card.model_dump(mode="json", exclude={"public_key"})


def event_json(event: TrailEvent) -> Json:
    """A trail event without its signature (the dashboard does not verify them)."""
    return event.model_dump(mode="json", exclude={"sig", "signer"})


@dataclass
class QueueDepth:
    """The tickets of one route: waiting to be delivered, and delivered but not yet acked (held)."""

    pending: int = 0
    in_flight: int = 0
    express_pending: int = 0
    express_in_flight: int = 0

    def as_json(self) -> Json:
        """The counts as a JSON object."""
        return dataclasses.asdict(self)


@dataclass
class _Bucket:
    done: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    latency_max: float = 0.0

    def as_json(self, start: int) -> Json:
        mean = self.latency_sum / self.latency_n if self.latency_n else None
        return {
            "t": start,
            "done": self.done,
            "failed": self.failed,
            "latency_mean": mean,
            "latency_max": self.latency_max if self.latency_n else None,
        }


@dataclass
class Metrics:
    """Tasks finished per time bucket and their latency (submission to completion), over a window."""

    window: float = 300.0
    bucket: int = 5
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def _start(self, at: datetime) -> int:
        return int(at.timestamp()) // self.bucket * self.bucket

    def add(self, at: datetime, *, done: bool, latency: float | None) -> Json | None:
        """Count one finished attempt at ``at``; the bucket's new value (None if out of the window)."""
        start = self._start(at)
        oldest = self._start(utcnow()) - int(self.window)
        if start < oldest:
            return None
        for stale in [t for t in self._buckets if t < oldest]:
            del self._buckets[stale]
        bucket = self._buckets.setdefault(start, _Bucket())
        if done:
            bucket.done += 1
        else:
            bucket.failed += 1
        if latency is not None:
            bucket.latency_sum += latency
            bucket.latency_n += 1
            bucket.latency_max = max(bucket.latency_max, latency)
        return bucket.as_json(start)

    def as_json(self) -> list[Json]:
        """Every bucket in the window, oldest first."""
        oldest = self._start(utcnow()) - int(self.window)
        return [b.as_json(t) for t, b in sorted(self._buckets.items()) if t >= oldest]


@dataclass
class _Scent:
    name: str
    key: str
    strength: float
    at: datetime
    deposits: int
    last: TrailEvent

    def as_json(self, subject: str, half_life: float) -> Json:
        return {
            "subject": subject,
            "name": self.name,
            "key": self.key,
            "strength": self.strength,
            "at": self.at.isoformat(),
            "half_life": half_life,
            "deposits": self.deposits,
            "last_agent": self.last.agent,
            "last_data": self.last.data,
        }


_COUNTED_OUTCOMES = {"task.completed": True, "task.failed": False, "task.expired": False}
_QUEUE_EVENTS = frozenset(
    {
        "task.ready",
        "task.claimed",
        "task.completed",
        "task.failed",
        "task.expired",
        "task.released",
        "task.declined",
        "task.cancelled",
        "task.retried",
        "task.unblocked",
        "task.asked",
        "task.answered",
    }
)


class SwarmState:
    """The dashboard's model of the board, the agents, their reputation and the trail."""

    def __init__(
        self,
        *,
        half_life: float = 3600.0,
        quarantine_below: float = 0.3,
        mark_half_life: float = 600.0,
        window: float = 300.0,
    ) -> None:
        self.half_life = half_life
        """Reputation half-life (seconds), to turn ledger evidence into scores."""
        self.quarantine_below = quarantine_below
        """Scores under this are shown as quarantined."""
        self.mark_half_life = mark_half_life
        """Half-life of marks (the trail's evaporation), sent along so browsers decay them."""
        self.tasks = TaskIndex()
        """Every task's summary (a tab receives only what it shows, and searches the rest)."""
        self.cards: dict[str, AgentCard] = {}
        self.ledgers: dict[str, AgentLedger] = {}
        self.routes: dict[str, Route] = {}
        self.queues: dict[str, QueueDepth] = {}
        self.events: deque[TrailEvent] = deque(maxlen=RECENT_EVENTS)
        self.metrics = Metrics(window=window)
        self.last_seq = 0
        self._scents: dict[str, _Scent] = {}
        self._marks_through = 0
        """Deposits up to this trail sequence are in the seeded strengths already."""
        self._submitted: OrderedDict[str, datetime] = OrderedDict()

    # ------------------------------------------------------------------ changes

    def on_record(self, record: TaskRecord) -> Json | None:
        """A task's new record (or the same again: then nothing is sent)."""
        return self.tasks.put(task_summary(record))

    def on_card(self, change: CardChange) -> Json:
        """An agent joined, changed its card, or left."""
        if change.card is None:
            self.cards.pop(change.agent_id, None)
        else:
            self.cards[change.agent_id] = change.card
        card = None if change.card is None else card_json(change.card)
        return {"type": "card", "kind": change.kind, "id": change.agent_id, "card": card}

    def on_ledger(self, agent: str, ledger: AgentLedger | None) -> Json:
        """An agent's ledger entry changed (None: removed)."""
        if ledger is None:
            self.ledgers.pop(agent, None)
        else:
            self.ledgers[agent] = ledger
        return {"type": "ledger", "agent": agent, "ledger": None if ledger is None else self._ledger(ledger)}

    def on_route(self, route: Route) -> Json | None:
        """A route was registered (or opened its express lane)."""
        if self.routes.get(route.name) == route:
            return None
        self.routes[route.name] = route
        self.queues.setdefault(route.name, QueueDepth())
        return {"type": "route", "route": route.name, "requires": list(route.requires)}

    def on_queues(self, depths: dict[str, QueueDepth]) -> Json | None:
        """Fresh queue depths of every route; a delta only when some changed."""
        if depths == self.queues:
            return None
        self.queues = dict(depths)
        return {"type": "queues", "queues": {name: q.as_json() for name, q in self.queues.items()}}

    def on_event(self, event: TrailEvent) -> list[Json]:
        """A trail event: itself, and what it changes in the charts and the marks."""
        if event.seq is not None:
            if event.seq <= self.last_seq:
                return []  # a feed restarted from an earlier point: seen already
            self.last_seq = event.seq
        self.events.append(event)
        deltas: list[Json] = [{"type": "trail", "event": event_json(event)}]
        if event.kind == "task.submitted":
            self._submitted[event.ref] = event.at
            if len(self._submitted) > _SUBMITTED_KEPT:
                self._submitted.popitem(last=False)
        elif event.kind in _COUNTED_OUTCOMES:
            done = _COUNTED_OUTCOMES[event.kind]
            submitted = self._submitted.get(event.ref)
            latency = (event.at - submitted).total_seconds() if done and submitted else None
            bucket = self.metrics.add(event.at, done=done, latency=latency)
            if bucket is not None:
                deltas.append({"type": "metrics", "bucket": bucket})
        elif event.kind.startswith("mark.") and (event.seq or 0) > self._marks_through:
            deltas.append(self._deposit(event))
        return deltas

    def seed_scent(self, scent: Scent) -> None:
        """Start from a mark's strength as ``Trail.strongest`` measured it (before the live feed)."""
        self._scents[scent.subject] = _Scent(
            scent.name, scent.key, scent.strength, utcnow(), scent.deposits, scent.last
        )
        self._marks_through = max(self._marks_through, scent.last.seq or 0)

    def _deposit(self, event: TrailEvent) -> Json:
        subject = trail_topic(event.kind, event.ref)
        scent = self._scents.get(subject)
        if scent is None:
            scent = _Scent(event.kind.removeprefix("mark."), event.ref, 0.0, event.at, 0, event)
        # Bring the old strength forward to this deposit's time, then add the new one.
        age = max((event.at - scent.at).total_seconds(), 0.0)
        scent.strength = scent.strength * 0.5 ** (age / self.mark_half_life) + event.intensity
        scent.at = max(scent.at, event.at)
        scent.deposits += 1
        scent.last = event
        self._scents[subject] = scent
        return {"type": "scent", "scent": scent.as_json(subject, self.mark_half_life)}

    @staticmethod
    def queue_relevant(event: TrailEvent) -> bool:
        """Whether ``event`` may have changed a route's queue depth."""
        return event.kind in _QUEUE_EVENTS or event.kind == "task.submitted"

    # ------------------------------------------------------------------ reading

    def _ledger(self, ledger: AgentLedger) -> Json:
        now = utcnow()
        caps = sorted(set(ledger.by_capability) | set(ledger.scores))
        return {
            "agent": ledger.agent,
            "totals": ledger.totals.model_dump(),
            "capabilities": {
                cap: {
                    "score": ledger.scores[cap].value(now, self.half_life) if cap in ledger.scores else 0.5,
                    "counts": ledger.by_capability[cap].model_dump() if cap in ledger.by_capability else {},
                }
                for cap in caps
            },
        }

    def snapshot(self) -> Json:
        """Everything a new tab needs, as of now."""
        now = utcnow()
        scents = sorted(self._scents.items(), key=lambda item: _decayed(item[1], now, self.mark_half_life))
        return {
            "type": "snapshot",
            "now": now.isoformat(),
            "quarantine_below": self.quarantine_below,
            "tasks": self.tasks.shown(),
            "counts": self.tasks.counts_json(),
            "agents": [card_json(c) for c in self.cards.values()],
            "ledgers": [self._ledger(entry) for entry in self.ledgers.values()],
            "routes": {name: list(r.requires) for name, r in self.routes.items()},
            "queues": {name: q.as_json() for name, q in self.queues.items()},
            "trail": [event_json(e) for e in self.events],
            "metrics": {
                "window": self.metrics.window,
                "bucket": self.metrics.bucket,
                "buckets": self.metrics.as_json(),
            },
            "scents": [s.as_json(subject, self.mark_half_life) for subject, s in reversed(scents)],
        }


def _decayed(scent: _Scent, now: datetime, half_life: float) -> float:
    return float(scent.strength * 0.5 ** (max((now - scent.at).total_seconds(), 0.0) / half_life))
