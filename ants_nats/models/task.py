"""What to do: a task as submitted, its retry policy, and the attempts at it."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import InvalidTask
from ..names import MAX_ROUTE_LENGTH, route_of
from ._wire import TRACEPARENT_PATTERN, Capability, TaskId, Wire, problems, sorted_unique
from .spending import Usage


class RetryPolicy(Wire):
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


class ArtifactRef(Wire):
    """Where an artifact lives: object ``name`` in the Object Store bucket ``ants_artifacts``
    (``nats object get ants_artifacts <name>``), with its size and SHA-256 digest."""

    name: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    digest: str = Field(description="'SHA-256=<base64url>', as the Object Store writes it.")


class Task(Wire):
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
    needs: tuple[Capability, ...] = Field(
        default=(),
        max_length=32,
        description="Protocol features an agent must understand to take it (``FEATURES``): an agent "
        "that lacks one steps aside (a free decline).",
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

    _canonical_requires = field_validator("requires")(sorted_unique)
    _canonical_depends = field_validator("depends_on")(sorted_unique)

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

    @model_validator(mode="wrap")
    @classmethod
    def _invalid_task(cls, data: Any, handler: ModelWrapValidatorHandler[Task], info: ValidationInfo) -> Task:
        # Defined last, so that it wraps every other validator. A task a caller builds (in code or
        # from JSON) that does not validate is InvalidTask, in the one hierarchy; a value read off
        # the wire stays pydantic's error, which its readers judge.
        try:
            return handler(data)
        except ValidationError as exc:
            if info.context and info.context.get("wire"):
                raise
            raise InvalidTask(f"invalid task: {problems(exc, 'task')}") from exc

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


class Attempt(Wire):
    """One claim of a task and how it ended."""

    agent: str
    token: int
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    error: str | None = None
    usage: Usage | None = Field(default=None, description="What the handler reported spending.")
    key: str | None = Field(
        default=None,
        description="Public key (nkey ``U...``) that signed the attempt's end, on a signed task.",
    )

    @property
    def counted(self) -> bool:
        """Whether the attempt counts toward ``max_attempts`` (a voluntary release does not)."""
        return self.outcome in ("failed", "expired")
