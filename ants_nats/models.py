"""pydantic models of every value ants-nats puts on the wire (JSON)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .log import get_logger
from .names import CAPABILITY_PATTERN, ID_PATTERN, MAX_ROUTE_LENGTH, MAX_SCHEDULE_NAME_LENGTH, route_of

log = get_logger("wire")

TaskId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AgentId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Capability = Annotated[str, StringConstraints(pattern=CAPABILITY_PATTERN)]
ScheduleName = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=MAX_SCHEDULE_NAME_LENGTH)]


def utcnow() -> datetime:
    """Current time, timezone-aware UTC (every timestamp on the wire is UTC)."""
    return datetime.now(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C ``traceparent`` (version, trace id, parent span id, flags)."""


def _sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    # One canonical JSON form per set, so equal tasks serialize identically.
    return tuple(sorted(set(values)))


class RetryPolicy(_Wire):
    """How long a failed task waits before its next attempt: ``base * factor**(n - 1)`` seconds
    after its n-th failure, at most ``cap``, of which a random part up to ``jitter`` (a share) is
    taken off, so that tasks failing together do not all come back together."""

    base: float = Field(default=1.0, gt=0, le=3600)
    factor: float = Field(default=2.0, ge=1, le=10)
    cap: float = Field(default=300.0, gt=0, le=86400)
    jitter: float = Field(default=0.5, ge=0, le=1)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failure (``rand`` in [0, 1))."""
        full = min(self.cap, self.base * self.factor ** max(failures - 1, 0))
        return full * (1 - self.jitter * rand())


class Usage(_Wire):
    """What work spent: tokens in and out, and money (in whatever unit the caller uses)."""

    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @property
    def tokens(self) -> int:
        """Tokens in and out together (what a token limit or budget counts)."""
        return self.tokens_in + self.tokens_out

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cost=self.cost + other.cost,
        )

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost)


class ArtifactRef(_Wire):
    """Where an artifact lives: object ``name`` in the Object Store bucket ``ants_artifacts``
    (``nats object get ants_artifacts <name>``), with its size and SHA-256 digest."""

    name: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    digest: str = Field(description="'SHA-256=<base64url>', as the Object Store writes it.")


class Task(_Wire):
    """What to do: the immutable specification of a task, as submitted."""

    id: TaskId
    kind: Capability = Field(description="Handler name, e.g. 'summarise'.")
    requires: tuple[Capability, ...] = Field(default=(), description="Capabilities an agent must have.")
    payload: JsonValue = None
    payload_ref: ArtifactRef | None = Field(
        default=None, description="A payload too big to be inline lives here (then payload is null)."
    )
    depends_on: tuple[TaskId, ...] = Field(default=(), description="Ids that must be done first.")
    priority: int = Field(
        default=0, ge=-1000, le=1000, description="Above 0: the ticket takes the route's express lane."
    )
    max_attempts: int = Field(default=3, ge=1, le=100)
    deadline: datetime | None = Field(default=None, description="After this, the task fails unclaimed.")
    not_before: datetime | None = Field(default=None, description="No agent takes the task before this.")
    timeout: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="Seconds a handler may run before the attempt fails."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Backoff between attempts.")
    created_by: str = Field(default="anonymous", max_length=128)
    budget: TaskId | None = Field(
        default=None, description="Id of the budget (in ants_budgets) its work is charged to, if any."
    )
    fail_unroutable: bool = Field(
        default=False,
        description="Fail at once, with the reason, when no live agent can take it (instead of "
        "waiting, unroutable, for one that can).",
    )
    trace: str | None = Field(
        default=None,
        pattern=TRACEPARENT_PATTERN,
        description="W3C traceparent of the submission (set by submit when tracing); not part of the "
        "task's definition: a resubmission under another trace is the same task.",
    )

    _canonical_requires = field_validator("requires")(_sorted_unique)
    _canonical_depends = field_validator("depends_on")(_sorted_unique)

    @field_validator("deadline", "not_before")
    @classmethod
    def _zoned(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        if info.context and info.context.get("wire"):
            return value.replace(tzinfo=UTC)  # written by another client: read it as UTC
        raise ValueError(f"{info.field_name} needs a time zone, e.g. 2026-01-01T00:00:00Z")

    @model_validator(mode="after")
    def _route_fits(self) -> Task:
        if self.payload_ref is not None and self.payload is not None:
            raise ValueError("a task has a payload or a payload_ref, not both")
        if len(self.route) > MAX_ROUTE_LENGTH:
            raise ValueError(
                f"the required capabilities make a route name of {len(self.route)} characters "
                f"(at most {MAX_ROUTE_LENGTH}): require fewer or shorter capabilities"
            )
        return self

    @property
    def route(self) -> str:
        """Route of this task: the canonical name of its required capability set."""
        return route_of(self.requires)

    @property
    def express(self) -> bool:
        """Whether its ticket takes the express lane (agents drain it before the normal one)."""
        return self.priority > 0


class TaskStatus(StrEnum):
    """Life-cycle states of a task on the board."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    WAITING_INPUT = "waiting_input"

    @property
    def terminal(self) -> bool:
        """True for states a task never leaves."""
        return self in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELLED)


Outcome = Literal["completed", "failed", "expired", "released", "declined", "asked"]
"""How an attempt ended, as the task's record keeps it (``Attempt.outcome``; an agent counts these
and a few more endings: ``metrics.Ending``)."""


class Attempt(_Wire):
    """One claim of a task and how it ended."""

    agent: str
    token: int
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    error: str | None = None
    usage: Usage | None = Field(default=None, description="What the handler reported spending.")

    @property
    def counted(self) -> bool:
        """Whether the attempt counts toward ``max_attempts`` (a voluntary release does not)."""
        return self.outcome in ("failed", "expired")


class CapabilitySpec(_Wire):
    """A capability an agent announces: a name, optionally a version and numeric limits, and what
    a planner (often an LLM) needs to choose it: a description, the JSON Schemas of the payload it
    takes and the result it gives, and example requests."""

    name: Capability
    version: str | None = Field(default=None, max_length=64)
    limits: dict[str, float] = Field(default_factory=dict, description="e.g. {'max_tokens': 4000}")
    description: str | None = Field(default=None, max_length=2000)
    input_schema: dict[str, JsonValue] | None = Field(default=None, description="JSON Schema of payloads.")
    output_schema: dict[str, JsonValue] | None = Field(default=None, description="JSON Schema of results.")
    examples: tuple[str, ...] = Field(default=(), max_length=20, description="Example requests, in words.")


class AgentCard(_Wire):
    """What an agent *can* do and how busy it is: key ``<agent id>`` in ``ants_agents``."""

    id: AgentId
    name: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=2000, description="What it is for, in words.")
    capabilities: tuple[CapabilitySpec, ...] = ()
    kinds: tuple[Capability, ...] | None = Field(
        default=None,
        max_length=1000,
        description="Task kinds it has handlers for; null: any kind (a catch-all handler, or a card "
        "that does not say).",
    )
    load: int = Field(ge=0)
    capacity: int = Field(ge=1)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    software: str = Field(description="ants-nats version the agent runs.")
    public_key: str | None = Field(default=None, description="nkey (U...) its trail events are signed with.")

    @property
    def capability_names(self) -> frozenset[str]:
        """Names of the announced capabilities."""
        return frozenset(c.name for c in self.capabilities)

    @property
    def spare(self) -> int:
        """Tasks it could still take."""
        return max(self.capacity - self.load, 0)

    def handles(self, kind: str) -> bool:
        """Whether it has a handler for tasks of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def can_take(self, task: Task) -> bool:
        """Whether it announces every capability ``task`` requires and handles its kind."""
        return set(task.requires) <= self.capability_names and self.handles(task.kind)

    @property
    def offer(self) -> str:
        """A digest of what it offers (capabilities, kinds, capacity; not its load): a decline
        stands while the decliner's offer is unchanged."""
        offered = self.model_dump_json(include={"capabilities", "kinds", "capacity"})
        return hashlib.sha256(offered.encode()).hexdigest()[:16]


MAX_QUESTION_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000


class Question(_Wire):
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


class DeclineNote(_Wire):
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
    usage: Usage | None = Field(default=None, description="What its declined attempts spent, together.")

    def stands(self, card: AgentCard, now: datetime) -> bool:
        """Whether this decline still holds for the agent of ``card`` at ``now``."""
        return self.agent == card.id and self.offer == card.offer and (self.until is None or now < self.until)


class UnroutableTask(_Wire):
    """A task no live agent will take: key ``<task id>`` in ``ants_unroutable``, while it waits."""

    task_id: TaskId
    kind: Capability
    requires: tuple[Capability, ...] = ()
    reason: str
    since: datetime = Field(default_factory=utcnow)


class TaskRecord(_Wire):
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
    holder: str | None = None
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

    @model_validator(mode="after")
    def _asked(self) -> TaskRecord:
        unanswered = bool(self.questions) and self.questions[-1].answer is None
        if self.status is TaskStatus.WAITING_INPUT and not unanswered:
            raise ValueError("a task waiting for input has an unanswered question last")
        return self

    @property
    def usage(self) -> Usage:
        """What every attempt at this task reported spending, together (declined ones included)."""
        spent = [a.usage for a in self.attempts] + [d.usage for d in self.declines]
        return sum((u for u in spent if u is not None), Usage())

    def declined(self, card: AgentCard, now: datetime | None = None) -> bool:
        """Whether the agent of ``card`` declined this task with the offer it makes now (and, for
        a 'not now', the decline has not lapsed by ``now``)."""
        at = now or utcnow()
        return any(d.stands(card, at) for d in self.declines)

    def declines_lapse(self, now: datetime | None = None) -> float | None:
        """Seconds until the first 'not now' decline lapses (None: none is pending)."""
        at = now or utcnow()
        pending = [
            (d.until - at).total_seconds() for d in self.declines if d.until is not None and d.until > at
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


class LeaseRecord(_Wire):
    """A direct claim (``TaskBoard.claim``): key ``<task id>`` in the leases bucket, expiring on the
    server unless its holder heartbeats. Claims made through a ticket need no lease key."""

    task_id: TaskId
    agent: str
    ttl: float = Field(gt=0)
    claimed_at: datetime
    token: int = Field(description="Fencing token of the claim this lease keeps alive.")


class Ticket(_Wire):
    """A work announcement on ``ants.work.<route>``: 'this task is ready'.

    ``record`` and ``revision`` are the ready record as the announcer wrote it, so the agent that
    first receives the ticket can claim with one compare-and-set, without reading the record first.
    Both are optional: a ticket without them (or a redelivered one) makes the agent read the record.
    """

    task_id: TaskId
    route: str
    revision: int | None = None
    record: TaskRecord | None = None


class Route(_Wire):
    """A set of required capabilities that tasks have been submitted with (key = route name)."""

    requires: tuple[Capability, ...]
    express: bool = Field(
        default=False, description="Tasks with priority > 0 were submitted: its express lane is in use."
    )

    @property
    def name(self) -> str:
        """The route's canonical name (its key in the routes bucket)."""
        return route_of(self.requires)


class Limit(_Wire):
    """A rate limit shared by every agent serving a capability: key ``<capability>`` in
    ``ants_limits``. At most ``requests`` handler runs and ``tokens`` reported tokens start in
    any ``per`` seconds, swarm-wide (unset: no limit of that kind)."""

    capability: Capability
    requests: int | None = Field(default=None, ge=0, le=10_000_000)
    tokens: int | None = Field(default=None, ge=0)
    per: float = Field(
        default=60.0, gt=0, le=86_400, allow_inf_nan=False, description="The interval, in seconds."
    )
    set_by: str | None = Field(default=None, max_length=128)
    set_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _limits_something(self) -> Limit:
        if self.requests is None and self.tokens is None:
            raise ValueError("a limit needs requests and/or tokens per interval")
        return self


class RateSlot(_Wire):
    """What was taken of a limit in one slot of time (a twentieth of its interval)."""

    n: int = Field(description="The slot: floor(unix time / slot length).")
    requests: int = Field(default=0, ge=0)
    tokens: int = Field(default=0, ge=0)


class RateWindow(_Wire):
    """What agents took of a capability's limit lately: key ``<capability>`` in ``ants_rates``,
    changed by compare-and-set only. ``held_until``: a provider said "too many" (``RateLimited``);
    nobody starts work of the capability before then."""

    slots: tuple[RateSlot, ...] = ()
    held_until: datetime | None = None


class Budget(_Wire):
    """What a submission may spend: key ``<id>`` in ``ants_budgets``. Its tasks carry the id
    (``Task.budget``); once ``spent`` reaches ``tokens`` or ``cost``, they fail unclaimed."""

    id: TaskId
    tokens: int | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    spent: Usage = Field(default_factory=Usage)
    charged: tuple[str, ...] = Field(
        default=(), description="The latest attempts charged (task.token.outcome): each is charged once."
    )
    created_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _limits_something(self) -> Budget:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget needs tokens and/or cost")
        return self

    @property
    def exhausted_because(self) -> str | None:
        """Why nothing more may be spent (None while something is left)."""
        if self.tokens is not None and self.spent.tokens >= self.tokens:
            return f"budget {self.id!r} is spent: {self.spent.tokens} of {self.tokens} tokens"
        if self.cost is not None and self.spent.cost >= self.cost:
            return f"budget {self.id!r} is spent: cost {self.spent.cost:g} of {self.cost:g}"
        return None

    @property
    def exhausted(self) -> str | None:
        """``exhausted_because``'s name in 0.1.0 (a reason, not a yes or no), kept so that code
        written against it still runs."""
        return self.exhausted_because


FIRE_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
"""How a firing's time appears in the id of the task it submits (UTC, to the second)."""


class Schedule(_Wire):
    """A task the server submits on a schedule: the value on ``ants.schedule.<name>`` in stream
    ``ANTS_SCHEDULES``. The server copies it to ``ants.fire.<name>`` at each firing (no process of
    ours keeps time); whoever relays the firing submits ``template`` as task ``<name>-<fire time>``,
    so a firing relayed twice submits one task."""

    name: ScheduleName
    when: str = Field(
        description="'@every 30s', '@hourly' and the like, a cron line (6 fields, seconds first; "
        "5 fields get second 0) or '@at <RFC 3339 time>' for once; all in UTC.",
        max_length=256,
    )
    template: Task = Field(description="The task each firing submits (its id is replaced).")
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="anonymous", max_length=128)

    @model_validator(mode="after")
    def _template_repeats(self) -> Schedule:
        reasons = {
            "depends_on": "a scheduled task cannot depend on other tasks",
            "deadline": "a scheduled task cannot carry a fixed deadline",
            "not_before": "a scheduled task cannot carry a fixed not_before (the schedule says when)",
        }
        for field, reason in reasons.items():
            if getattr(self.template, field):
                raise ValueError(reason)
        return self

    @property
    def once_at(self) -> datetime | None:
        """The time of a one-off (``@at``) schedule, else None."""
        if not self.when.startswith("@at "):
            return None
        return datetime.fromisoformat(self.when.removeprefix("@at ").strip())

    def task_for(self, fired_at: datetime) -> Task:
        """The task a firing at ``fired_at`` submits: the template as ``<name>-<UTC time>``."""
        stamp = fired_at.astimezone(UTC).strftime(FIRE_TIME_FORMAT)
        return self.template.model_copy(update={"id": f"{self.name}-{stamp}"})


class TrailEvent(_Wire):
    """One event on the trail (stream ``ANTS_TRAIL``, subject ``ants.trail.<kind>.<ref>.<by or _>``).

    ``kind`` is ``task.<what>``, ``agent.<what>`` or ``mark.<name>``; ``ref`` the task id, agent id
    or mark key. ``seq`` is the stream sequence, filled in when the event is read (never written).
    A signed event's signature is in its message's headers (``Ants-Signer``, ``Ants-Sig``) and
    covers the message as stored; an event read from the trail keeps that message (``stored``).
    """

    kind: str
    ref: str
    at: datetime = Field(default_factory=utcnow)
    agent: str | None = Field(default=None, description="Who laid it.")
    token: int | None = Field(default=None, description="Fencing token, for lease events.")
    intensity: float = Field(default=1.0, ge=0, le=1_000_000)
    data: JsonValue = None
    by: str | None = Field(default=None, description="The agent that laid it (signed it), if any.")
    signer: str | None = Field(
        default=None, description="Deprecated (now the Ants-Signer header): public nkey of the signer."
    )
    sig: str | None = Field(
        default=None, description="Deprecated (now the Ants-Sig header): signature of signed_bytes()."
    )
    seq: int | None = None
    # Not a field: the message the event was read from, whose bytes a header signature covers
    # (another client's JSON is not ours, so the event cannot be serialised back to them).
    _stored: tuple[str, bytes, dict[str, str]] | None = None

    @property
    def stored(self) -> tuple[str, bytes, dict[str, str]] | None:
        """The message this event was read from (subject, payload, headers), None if it was not."""
        return self._stored

    def stored_as(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> TrailEvent:
        """This event, noting the message it was read from (what a verifier checks)."""
        event = self.model_copy()
        event._stored = (subject, payload, dict(headers or {}))
        return event

    def signed_bytes(self) -> bytes:
        """The bytes a deprecated in-body ``sig`` covers: pydantic's JSON of the event without
        ``sig`` and ``seq``. Such events are still verified for one release; none are written."""
        return self.model_dump_json(exclude={"sig", "seq"}).encode()

    def strength(self, now: datetime, half_life: float) -> float:
        """Intensity left at ``now``: it halves every ``half_life`` seconds (evaporation)."""
        age = max((now - self.at).total_seconds(), 0.0)
        return float(self.intensity * 0.5 ** (age / half_life))


_M = TypeVar("_M", bound=BaseModel)


ANY_CAPABILITY = "any"
"""The capability name under which tasks that require nothing are accounted."""


class Counts(_Wire):
    """How often something happened."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    released: int = 0
    declined: int = 0
    asked: int = 0
    bad_result: int = 0

    def plus(self, what: str) -> Counts:
        """These counts with one more ``what``."""
        return self.model_copy(update={what: getattr(self, what) + 1})


class Score(_Wire):
    """A Beta reputation with exponential forgetting (Jøsang & Ismail, 2002).

    ``good`` and ``bad`` are evidence weights decayed to time ``at``; evidence halves every
    ``half_life`` seconds. The score is the expected value of Beta(1 + good, 1 + bad): 0.5 with no
    evidence, toward 1 with successes, toward 0 with failures.
    """

    good: float = 0.0
    bad: float = 0.0
    at: datetime | None = None

    def decayed(self, now: datetime, half_life: float) -> Score:
        """The same evidence, as it stands at ``now``."""
        if self.at is None:
            return self.model_copy(update={"at": now})
        factor = 0.5 ** (max((now - self.at).total_seconds(), 0.0) / half_life)
        return Score(good=self.good * factor, bad=self.bad * factor, at=max(now, self.at))

    def add(self, good: float, bad: float, at: datetime, half_life: float) -> Score:
        """This score with more evidence observed at ``at``."""
        current = self.decayed(at, half_life)
        return current.model_copy(update={"good": current.good + good, "bad": current.bad + bad})

    def value(self, now: datetime, half_life: float) -> float:
        """The reputation at ``now``, in (0, 1)."""
        current = self.decayed(now, half_life)
        return (1.0 + current.good) / (2.0 + current.good + current.bad)


class AgentLedger(_Wire):
    """The value of key ``<agent id>`` in ``ants_ledger``: counts and reputation per capability."""

    agent: str
    totals: Counts = Counts()
    by_capability: dict[str, Counts] = Field(default_factory=dict)
    scores: dict[str, Score] = Field(default_factory=dict)
    usage: dict[str, Usage] = Field(default_factory=dict, description="What its work spent, per capability.")
    last_seq: int = 0
    updated_at: str = ""


def wire_bytes(model: BaseModel, *, exclude: set[str] | None = None) -> bytes:
    """``model`` as the JSON ants-nats writes: fields at their default value are left out (readers
    fill them in), which keeps the messages of the hot path small."""
    return model.model_dump_json(exclude_defaults=True, exclude=exclude).encode()


def parse_or_none(model: type[_M], data: bytes, *, where: str) -> _M | None:
    """``data`` as a ``model``, or None (logged with ``where``) when it does not validate.

    Shared state can hold garbage (a buggy or hostile writer); readers skip it instead of crashing.
    """
    try:
        return model.model_validate_json(data, context={"wire": True})
    except ValidationError:
        log.warning("wire.invalid", model=model.__name__, where=where)
        return None
