"""pydantic models of every value ants-nats puts on the wire (JSON), one module per concept:
``task`` (a task as submitted and its attempts), ``record`` (its state on the board, tickets,
routes, lease keys), ``card`` (what an agent offers), ``spending`` (usage, rate limits and windows,
budgets), ``schedule``, ``trail`` (events, and the ledger projected from them); ``_wire`` has what
they share. Import them from here."""

from __future__ import annotations

from ._wire import (
    TRACEPARENT_PATTERN,
    AgentId,
    Capability,
    ScheduleName,
    TaskId,
    parse_or_none,
    utcnow,
    wire_bytes,
)
from .card import AgentCard, CapabilitySpec
from .protocol import FEATURES, PROTOCOL_VERSION, lacking
from .record import (
    MAX_ANSWER_CHARS,
    MAX_DECLINES_KEPT,
    MAX_QUESTION_CHARS,
    DeclineNote,
    LeaseRecord,
    Question,
    Route,
    TaskRecord,
    Ticket,
    UnroutableTask,
    stored_record,
)
from .schedule import FIRE_TIME_FORMAT, Schedule
from .spending import Budget, Limit, RateSlot, RateWindow, Usage
from .task import ArtifactRef, Attempt, Outcome, RetryPolicy, Task, TaskStatus
from .trail import ANY_CAPABILITY, AgentLedger, Counts, Score, TrailEvent

__all__ = [
    "ANY_CAPABILITY",
    "FEATURES",
    "FIRE_TIME_FORMAT",
    "MAX_ANSWER_CHARS",
    "MAX_DECLINES_KEPT",
    "MAX_QUESTION_CHARS",
    "PROTOCOL_VERSION",
    "TRACEPARENT_PATTERN",
    "AgentCard",
    "AgentId",
    "AgentLedger",
    "ArtifactRef",
    "Attempt",
    "Budget",
    "Capability",
    "CapabilitySpec",
    "Counts",
    "DeclineNote",
    "LeaseRecord",
    "Limit",
    "Outcome",
    "Question",
    "RateSlot",
    "RateWindow",
    "RetryPolicy",
    "Route",
    "Schedule",
    "ScheduleName",
    "Score",
    "Task",
    "TaskId",
    "TaskRecord",
    "TaskStatus",
    "Ticket",
    "TrailEvent",
    "UnroutableTask",
    "Usage",
    "lacking",
    "parse_or_none",
    "stored_record",
    "utcnow",
    "wire_bytes",
]
