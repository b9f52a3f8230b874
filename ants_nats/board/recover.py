"""Recovery: finishing what a dead agent left half done, by whoever meets it next.

A ticket is acked only after its task's consequences are out, so meeting a finished task through
a ticket means its finisher may have died in between; meeting a claimed task through the holder's
own ticket means the holder's lease ran out. Either way the agent at hand repairs the trail and
carries the outcome on; nobody watches for failures.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import JsonValue

from ..models import Attempt, TaskRecord, TaskStatus, utcnow
from ._core import Core
from .lease import caps
from .propagate import Propagation


class Recovery:
    """Repairs of one board."""

    def __init__(self, core: Core, propagation: Propagation) -> None:
        self._core = core
        self._propagation = propagation

    async def recover(self, record: TaskRecord, *, by: str) -> None:
        """Finish what a crash may have cut short after ``record`` reached its terminal state:
        restore the final events the trail lacks (reputation depends on them) and propagate again."""
        core, task_id = self._core, record.task.id
        last = record.attempts[-1] if record.attempts else None
        # Beyond the trail's retention a missing event is just aged out, not lost.
        young = utcnow() - record.updated_at < timedelta(seconds=core.trail.config.max_age / 2)
        if last is not None and last.outcome in ("completed", "failed", "expired") and young:
            kind = f"task.{last.outcome}"
            seen = await core.trail.last(kind, task_id)
            if seen is None or seen.token != last.token:
                data: dict[str, JsonValue] = {**caps(record), "repaired": True}
                if last.outcome == "failed":
                    data.update(
                        error=last.error,
                        retry=record.status is not TaskStatus.FAILED,
                        status=record.status.value,
                    )
                await core.event(kind, task_id, agent=last.agent, token=last.token, data=data, by=by)
            if record.status is TaskStatus.DEAD and await core.trail.last("task.dead", task_id) is None:
                await core.event("task.dead", task_id, data={"error": record.error}, by=by)
        cancelled = record.status is TaskStatus.CANCELLED and young
        if cancelled and await core.trail.last("task.cancelled", task_id) is None:
            data = {"reason": record.error, "holder": None, "token": record.token, "repaired": True}
            await core.event("task.cancelled", task_id, data=data, by=by)
        await self._propagation.propagate(record, by=by)

    async def expired(self, record: TaskRecord, attempt: Attempt, *, noticed_by: str) -> None:
        """Record on the trail that ``attempt``'s lease ran out (and the task's death, if it died)."""
        core, task_id = self._core, record.task.id
        data: JsonValue = {**caps(record), "noticed_by": noticed_by}
        await core.event(
            "task.expired", task_id, agent=attempt.agent, token=attempt.token, data=data, by=noticed_by
        )
        if record.status is TaskStatus.DEAD:
            await core.event("task.dead", task_id, data={"error": record.error}, by=noticed_by)
            await self._propagation.propagate(record, by=noticed_by)
