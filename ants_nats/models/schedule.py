"""Tasks the server submits on a schedule."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field, model_validator

from ._wire import ScheduleName, Wire, utcnow
from .task import Task

FIRE_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
"""How a firing's time appears in the id of the task it submits (UTC, to the second)."""


class Schedule(Wire):
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
