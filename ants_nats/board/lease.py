"""A won claim (``Lease``), the answer of one that did not win (``NotTaken``), and the pure record
changes a claim makes.

Nothing here talks to the server: these functions say what a record becomes when it is claimed,
when its holder's lease runs out, and whether it still belongs to a lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from nats.aio.msg import Msg
from pydantic import JsonValue

from ..models import Attempt, Outcome, Task, TaskRecord, TaskStatus, Usage, utcnow


@dataclass
class Lease:
    """A held claim on a task. ``token`` is the fencing token: the record revision the claim was
    based on, larger for every later claim of the same task.

    A claim through a ticket may be *deferred*: the handler starts at once and the claim is
    written only if it still runs after ``BoardConfig.claim_after`` (or on ``confirm``). Until then
    ``claimed`` is False, the record reads ``pending``, and the token is provisional: the board
    fences every write with it exactly, but a handler that hands the token to another system
    should ``await board.confirm(lease)`` (``ctx.confirm()``) first.
    """

    task: Task
    token: int
    agent_id: str
    ttl: float
    expires_at: datetime
    _record: TaskRecord = field(repr=False)
    """The record as this holder last wrote or checked it, and its revision: the next CAS's base."""
    _revision: int = field(repr=False)
    _ticket: Msg | None = field(default=None, repr=False)
    """The ticket whose un-acked delivery is this claim's lease (None: a lease key instead)."""
    _lease_revision: int = field(default=0, repr=False)
    """With a lease key: its last revision (heartbeats CAS on it)."""
    claimed: bool = True
    """Whether the claim is written to the record (False while deferred)."""
    announced: bool = True
    """Whether the claim's ``task.claimed`` event is on the trail. A claim written while the trail
    could not take its event is reported by its outcome's event instead, as a deferred one is."""
    started_at: datetime = field(default_factory=utcnow)
    """When the claim began (the attempt's start)."""

    @property
    def task_id(self) -> str:
        """Id of the claimed task."""
        return self.task.id

    @property
    def answers(self) -> tuple[str, ...]:
        """Answers to the questions the task's handlers asked before (``TaskBoard.ask``), in order."""
        return self._record.answers


@dataclass(frozen=True)
class NotTaken:
    """The definite answer of a claim that did not win.

    ``reason``: ``held`` (another agent holds a live lease; retry after ``retry_after`` s),
    ``finished`` (the task is done, failed or dead; ``status`` says which), ``not_ready``
    (dependencies are not done yet), ``unknown`` (no such task), ``quarantined`` (the claimant's
    reputation for a required capability is too low, and the claim was not on probation) or
    ``duplicate`` (a second ticket for a task that its holder's own ticket keeps alive) or
    ``not_yet`` (the task's ``not_before`` is ``retry_after`` seconds away) or ``waiting`` (it
    waits for an answer to a question; it fails unanswered in ``retry_after`` seconds).
    """

    task_id: str
    reason: Literal[
        "held", "finished", "not_ready", "unknown", "quarantined", "duplicate", "not_yet", "waiting"
    ]
    holder: str | None = None
    retry_after: float | None = None
    status: TaskStatus | None = None
    quarantined: tuple[str, ...] = ()
    """With reason ``quarantined``: the capabilities the claimant is not trusted with right now."""


Taken = NotTaken
"""``NotTaken``'s name in 0.1.0, kept so that code written against it still runs: it is not only
'someone else took it' but every answer of a claim that did not win (unknown, not yet ...)."""


def holds(lease: Lease, record: TaskRecord) -> bool:
    """Whether ``record`` still belongs to ``lease``: claimed with its token, or, for a deferred
    claim, still pending with nobody's claim since the record it started from."""
    if record.status is TaskStatus.CLAIMED:
        # Also a deferred claim whose write landed while its writer was cancelled.
        return record.token == lease.token and record.holder == lease.agent_id
    # Until it is written, ``_record`` is the record the deferred claim started from; any claim
    # since then has changed the token.
    return (
        not lease.claimed and record.ready and record.holder is None and record.token == lease._record.token
    )


def claimed(
    record: TaskRecord,
    agent_id: str,
    *,
    token: int,
    now: datetime,
    ticket: int | None,
    key: str | None = None,
) -> TaskRecord:
    """``record`` claimed by ``agent_id`` (signing with ``key`` on a signed board) with fencing
    ``token`` (through ``ticket``, if any)."""
    return record.model_copy(
        update={
            "status": TaskStatus.CLAIMED,
            "holder": agent_id,
            "holder_key": key,
            "token": token,
            "ticket": ticket,
            "claimed_at": now,
            "unroutable": None,
            "unroutable_reason": None,
        }
    )


def expire(record: TaskRecord, now: datetime) -> tuple[TaskRecord, Attempt]:
    """``record`` after its holder's lease expired: the attempt counted, pending or dead."""
    attempt = Attempt(
        agent=record.holder or "?",
        token=record.token or 0,
        started_at=record.claimed_at or now,
        ended_at=now,
        outcome="expired",
        key=record.holder_key,
    )
    returned = record.model_copy(
        update={
            "attempts": (*record.attempts, attempt),
            "holder": None,
            "holder_key": None,
            "ticket": None,
            "status": TaskStatus.PENDING,
        }
    )
    if returned.counted_attempts >= record.task.max_attempts:
        error = (
            f"gave up after {returned.counted_attempts} attempts (max_attempts={record.task.max_attempts})"
        )
        returned = returned.model_copy(update={"status": TaskStatus.DEAD, "error": error})
    return returned, attempt


def attempt_of(
    lease: Lease,
    outcome: Outcome,
    now: datetime,
    error: str | None = None,
    usage: Usage | None = None,
    *,
    key: str | None = None,
) -> Attempt:
    """The attempt ``lease``'s holder ends with ``outcome`` (having spent ``usage``; signing with
    ``key`` on a signed board)."""
    return Attempt(
        key=key,
        agent=lease.agent_id,
        token=lease.token,
        started_at=lease.started_at,
        ended_at=now,
        outcome=outcome,
        error=error,
        usage=usage,
    )


def claim_facts(lease: Lease, record: TaskRecord) -> dict[str, JsonValue]:
    """What an outcome event says of the claim it ends: the task's capabilities, and whether the
    claim was deferred: no ``task.claimed`` event precedes it (never written, or its event lost
    to a fault), so the outcome's event stands for the claim too."""
    deferred = not (lease.claimed and lease.announced)
    return {**caps(record), "deferred": True} if deferred else caps(record)


def caps(record: TaskRecord) -> dict[str, JsonValue]:
    """What reputation needs to know of a task: its kind and required capabilities."""
    return {"kind": record.task.kind, "requires": list(record.task.requires)}
