"""A task's state on the board (its record, the questions asked and declines noted), and what
announces and keeps a claim: tickets, routes, lease keys."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import Field, JsonValue, model_validator

from ..names import TASKS_BUCKET, route_of
from ._wire import Capability, TaskId, Wire, parse_or_none, utcnow
from .card import AgentCard
from .spending import Usage
from .task import ArtifactRef, Attempt, Task, TaskStatus

MAX_QUESTION_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000


class Question(Wire):
    """A question a handler asked (``ctx.ask``) while its task waits for input, and its answer."""

    text: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    asked_by: str
    asked_at: datetime
    until: datetime = Field(description="When the task fails if no answer has come.")
    answer: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)
    answered_by: str | None = Field(default=None, max_length=128)
    answered_at: datetime | None = None


MAX_DECLINES_KEPT = 64
"""Most decliners a record remembers (the oldest are forgotten first): records stay bounded."""


class DeclineNote(Wire):
    """What one agent's declines of a task come to: how often, the last reason and when."""

    agent: str
    count: int = Field(ge=1)
    reason: str = Field(max_length=2000)
    at: datetime
    offer: str = Field(
        description="The decliner's ``AgentCard.offer`` then: the decline stands while it holds."
    )
    token: int = Field(description="Fencing token of the claim it last declined.")
    until: datetime | None = Field(
        default=None, description="A 'not now': the decline lapses then (null: while the offer holds)."
    )
    usage: Usage | None = Field(default=None, description="What its latest declined attempt spent.")
    spent: Usage | None = Field(default=None, description="What all its declined attempts spent, together.")
    key: str | None = Field(default=None, description="Public key of the decliner, on a signed task.")

    def stands(self, card: AgentCard, now: datetime) -> bool:
        """Whether this decline still holds for the agent of ``card`` at ``now``."""
        return self.agent == card.id and self.offer == card.offer and (self.until is None or now < self.until)


class UnroutableTask(Wire):
    """A task no live agent will take: key ``<task id>`` in ``ants_unroutable``, while it waits."""

    task_id: TaskId
    kind: Capability
    requires: tuple[Capability, ...] = ()
    reason: str
    since: datetime = Field(default_factory=utcnow)


class TaskRecord(Wire):
    """A task and its state: the value of key ``<task id>`` in the tasks bucket."""

    task: Task
    status: TaskStatus
    waiting_on: tuple[TaskId, ...] = Field(default=(), description="Dependencies not done yet.")
    dependents: tuple[TaskId, ...] = Field(default=(), description="Tasks that wait on this one.")
    finished_dependents: tuple[TaskId, ...] = Field(
        default=(),
        description="Dependents that have finished: once all have, a finished record may expire.",
    )
    budget_from: int = Field(
        default=0, ge=0, description="Attempts before this index do not count (a retry gave a fresh budget)."
    )
    owner_key: str | None = Field(
        default=None,
        description="Public key (nkey ``U...``) of the submitter that signed the task: set, every "
        "revision must be signed and legal for its signer (``seal``); null, the task is unsigned.",
    )
    holder: str | None = None
    holder_key: str | None = Field(default=None, description="Public key of the holder, on a signed task.")
    token: int | None = Field(default=None, description="Fencing token of the current claim.")
    claimed_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    result: JsonValue = None
    result_ref: ArtifactRef | None = Field(
        default=None, description="A result too big to be inline lives here (then result is null)."
    )
    error: str | None = None
    unroutable: tuple[Capability, ...] | None = Field(
        default=None,
        description="Set while no live agent can take it: the required capabilities nobody announces "
        "(empty when they are announced, but nobody able handles its kind or all of them declined).",
    )
    unroutable_reason: str | None = Field(default=None, description="Why it is unroutable, in words.")
    declines: tuple[DeclineNote, ...] = Field(
        default=(), description="Who declined it, how often, why (at most one note per agent)."
    )
    ticket: int | None = Field(
        default=None,
        description="While claimed through a ticket: the ticket's stream sequence. Its un-acked delivery "
        "is the claim's lease; the server redelivering it means the lease expired.",
    )
    questions: tuple[Question, ...] = Field(
        default=(), description="What its handlers asked (ctx.ask) and the answers given, in order."
    )
    updated_at: datetime = Field(default_factory=utcnow)
    v: int | None = Field(default=None, description="Protocol version of its last writer (null: 1).")

    @model_validator(mode="after")
    def _asked(self) -> TaskRecord:
        unanswered = bool(self.questions) and self.questions[-1].answer is None
        if self.status is TaskStatus.WAITING_INPUT and not unanswered:
            raise ValueError("a task waiting for input has an unanswered question last")
        return self

    @property
    def usage(self) -> Usage:
        """What every attempt at this task reported spending, together (declined ones included)."""
        spent = [a.usage for a in self.attempts] + [d.spent for d in self.declines]
        return sum((u for u in spent if u is not None), Usage())

    def declined(self, card: AgentCard, now: datetime | None = None) -> bool:
        """Whether the agent of ``card`` declined this task with the offer it makes now (and, for
        a 'not now', the decline has not lapsed by ``now``)."""
        at = now or utcnow()
        return any(d.stands(card, at) for d in self.declines)

    def declines_lapse(
        self, now: datetime | None = None, able: Mapping[str, AgentCard] | None = None
    ) -> float | None:
        """Seconds until the first 'not now' decline lapses (None: none is pending); given the
        ``able`` live agents' cards by id, only their standing declines count (a departed
        agent's "not now" holds nothing back)."""
        at = now or utcnow()
        pending = [
            (d.until - at).total_seconds()
            for d in self.declines
            if d.until is not None
            and d.until > at
            and (able is None or (d.agent in able and d.stands(able[d.agent], at)))
        ]
        return min(pending, default=None)

    @property
    def answers(self) -> tuple[str, ...]:
        """The answers given so far, in the order their questions were asked."""
        return tuple(q.answer for q in self.questions if q.answer is not None)

    @property
    def counted_attempts(self) -> int:
        """Attempts that count toward ``max_attempts`` (since the last ``retry``, if any)."""
        return sum(1 for attempt in self.attempts[self.budget_from :] if attempt.counted)

    @property
    def ready(self) -> bool:
        """Pending with every dependency done."""
        return self.status is TaskStatus.PENDING and not self.waiting_on


class LeaseRecord(Wire):
    """A direct claim (``TaskBoard.claim``): key ``<task id>`` in the leases bucket, expiring on the
    server unless its holder heartbeats. Claims made through a ticket need no lease key."""

    task_id: TaskId
    agent: str
    ttl: float = Field(gt=0)
    claimed_at: datetime
    token: int = Field(description="Fencing token of the claim this lease keeps alive.")


class Ticket(Wire):
    """A work announcement on ``ants.work.<route>``: 'this task is ready'.

    ``record`` and ``revision`` are the ready record as the announcer wrote it, so the agent that
    first receives the ticket can claim with one compare-and-set, without reading the record first.
    Both are optional: a ticket without them (or a redelivered one) makes the agent read the record.
    """

    task_id: TaskId
    route: str
    revision: int | None = None
    record: TaskRecord | None = None


class Route(Wire):
    """A set of required capabilities that tasks have been submitted with (key = route name)."""

    requires: tuple[Capability, ...]
    express: bool = Field(
        default=False, description="Tasks with priority > 0 were submitted: its express lane is in use."
    )

    @property
    def name(self) -> str:
        """The route's canonical name (its key in the routes bucket)."""
        return route_of(self.requires)


def stored_record(task_id: str, value: bytes) -> TaskRecord | None:
    """The record a value stored on key ``task_id`` holds; None (logged) if it is garbage."""
    return parse_or_none(TaskRecord, value, where=f"{TASKS_BUCKET}/{task_id}")
