"""What the MCP tools take and return: pydantic models whose JSON schemas the client shows the model.

Inputs are deliberately loose (plain strings, no patterns): the board validates ids, kinds and
capabilities itself and names the problem in its own words, which reads better to a model than a
regular expression. Outputs are compact views of the project's records.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ants_nats import AgentCard, Scent, TaskRecord, TaskStatus, Waiting
from ants_nats.names import ID_PATTERN, ID_RULE, MARK_NAME_PATTERN, TRAIL_SUBJECT_PREFIX

MARK_SUBJECTS = f"{TRAIL_SUBJECT_PREFIX}.mark"
"""Where marks live on the trail (``ants.trail.mark.<name>.<key>``, docs/protocol.md)."""
_MARK_NAME = re.compile(MARK_NAME_PATTERN)
_MARK_KEY = re.compile(ID_PATTERN)
# The two patterns above mirror the trail's own checks (``Trail.mark``); reading needs them too,
# because a bad name or key would otherwise become a malformed subject filter rather than an error.


def mark_name_problem(name: str) -> str | None:
    """Why ``name`` is not a mark name, or None when it is one."""
    return None if _MARK_NAME.match(name) else f"invalid mark name {name!r}: 1-5 dotted tokens of a-z 0-9 _ -"


def mark_key_problem(key: str) -> str | None:
    """Why ``key`` is not a mark key, or None when it is one."""
    return None if _MARK_KEY.match(key) else f"invalid mark key {key!r}: use {ID_RULE}"


TaskIdArg = Annotated[str, Field(description="A task id.")]
TaskIdsArg = Annotated[list[str], Field(description="Task ids.")]


class TaskIn(BaseModel):
    """A task to submit."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Unique task id: 1-128 of A-Z a-z 0-9 _ -, starting with a letter or digit.")
    kind: str = Field(description="What to do, e.g. 'summarise' (lower-case a-z 0-9 _ -).")
    requires: list[str] = Field(
        default_factory=list, description="Capabilities an agent must have to take the task."
    )
    payload: JsonValue = Field(default=None, description="The task's input, any JSON value.")
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids of tasks (on the board or in the same call) that must be done first.",
    )
    priority: int = Field(default=0, description="Above 0: agents take it before ordinary tasks.")
    max_attempts: int = Field(default=3, description="Attempts before the task is given up as dead.")
    timeout: float | None = Field(default=None, description="Seconds one attempt may take.")


class TaskOut(BaseModel):
    """A task's state on the board."""

    id: str
    kind: str
    status: TaskStatus
    requires: list[str]
    depends_on: list[str]
    waiting_on: list[str] = Field(description="Dependencies not done yet.")
    holder: str | None = Field(description="The agent working on it, if any.")
    attempts: int
    error: str | None
    unroutable: list[str] | None = Field(description="Capabilities no live agent has, if any.")
    unroutable_reason: str | None = Field(
        default=None, description="Why no live agent will take it, if so (as its record last said)."
    )
    waiting: Waiting | None = Field(
        default=None,
        description="While unfinished: why it waits (a reason code, the reason in words, until when "
        "if known, the agents concerned), judged from the live agents now.",
    )
    question: str | None = Field(
        default=None, description="While waiting_input: the question to answer (answer_task)."
    )
    result: JsonValue = Field(default=None, description="The result, once done.")
    updated_at: datetime

    @classmethod
    def of(cls, record: TaskRecord, result: JsonValue = None, waiting: Waiting | None = None) -> TaskOut:
        """The view of ``record``, with ``result`` (resolved from the artifact store if need be)
        and why it waits."""
        task = record.task
        return cls(
            id=task.id,
            kind=task.kind,
            status=record.status,
            requires=list(task.requires),
            depends_on=list(task.depends_on),
            waiting_on=list(record.waiting_on),
            holder=record.holder,
            attempts=len(record.attempts),
            error=record.error,
            unroutable=None if record.unroutable is None else list(record.unroutable),
            unroutable_reason=record.unroutable_reason,
            waiting=waiting,
            question=record.questions[-1].text if record.status is TaskStatus.WAITING_INPUT else None,
            result=result,
            updated_at=record.updated_at,
        )


class WorkItem(BaseModel):
    """A task this server's agent holds for the model to work on."""

    task_id: str
    kind: str
    payload: JsonValue
    requires: list[str]
    depends_on: list[str]
    dependency_results: dict[str, JsonValue] = Field(description="Results of the tasks it depends on.")
    lease_ttl: float = Field(description="Seconds the claim lives without a heartbeat (sent for you).")
    settle_within: float | None = Field(
        description="Seconds you have to settle it before the attempt fails (None: no limit)."
    )


class Claimed(BaseModel):
    """The answer of ``claim_next``: a task to work on, or none within the timeout."""

    task: WorkItem | None
    note: str


class Settled(BaseModel):
    """How the board recorded the model's verdict on a task."""

    task_id: str
    status: TaskStatus
    outcome: str | None = Field(description="How this attempt ended: completed, failed, declined, ...")
    note: str


class AgentOut(BaseModel):
    """A live agent: what it can do and how busy it is."""

    id: str
    name: str
    capabilities: list[str]
    limits: dict[str, dict[str, float]] = Field(description="Announced limits per capability.")
    load: int
    capacity: int
    heartbeat_at: datetime

    @classmethod
    def of(cls, card: AgentCard) -> AgentOut:
        """The view of ``card``."""
        return cls(
            id=card.id,
            name=card.name,
            capabilities=[spec.name for spec in card.capabilities],
            limits={spec.name: dict(spec.limits) for spec in card.capabilities if spec.limits},
            load=card.load,
            capacity=card.capacity,
            heartbeat_at=card.heartbeat_at,
        )


class MarkOut(BaseModel):
    """A mark on the trail and its strength now (it evaporates; deposits add up)."""

    name: str
    key: str
    strength: float
    deposits: int
    data: JsonValue = Field(description="Data of the latest deposit.")
    laid_by: str | None
    at: datetime = Field(description="When the latest deposit was laid.")

    @classmethod
    def of(cls, scent: Scent) -> MarkOut:
        """The view of ``scent``."""
        last = scent.last
        return cls(
            name=scent.name,
            key=scent.key,
            strength=scent.strength,
            deposits=scent.deposits,
            data=last.data,
            laid_by=last.agent,
            at=last.at,
        )


class MarkLaid(BaseModel):
    """A mark just laid."""

    name: str
    key: str
    seq: int | None = Field(description="Its sequence number on the trail.")
