"""Cancelling: stopping a task that is wrong, whoever holds it, with no one to ask.

A cancel is one CAS to the terminal status ``cancelled`` (the reason in ``error``), then
``task.cancelled`` on the trail. A holder learns of it from that event (every agent listens for
it) or, failing that, at its next heartbeat; either way its late writes fail on the changed
record. Dependents fail as blocked, as for a failed dependency.
"""

from __future__ import annotations

from pydantic import JsonValue

from ..errors import TaskFinished
from ..models import TaskRecord, TaskStatus
from ._core import Core, check_id
from .propagate import Propagation


class Cancellation:
    """Cancels on one board."""

    def __init__(self, core: Core, propagation: Propagation) -> None:
        self._core = core
        self._propagation = propagation

    async def cancel(self, task_id: str, reason: str, *, by: str | None = None) -> TaskRecord:
        """See ``TaskBoard.cancel``."""
        check_id(task_id)
        holder: str | None = None
        changed = aside = False

        def cancel(record: TaskRecord) -> TaskRecord | None:
            nonlocal holder, changed, aside
            changed = False
            if record.status is TaskStatus.CANCELLED:
                return None  # cancelling twice changes nothing
            if record.status.terminal:
                raise TaskFinished(
                    f"task {task_id!r} is already {record.status.value}: it cannot be cancelled"
                )
            holder, changed = record.holder, True
            aside = record.unroutable_reason is not None
            return record.model_copy(
                update={
                    "status": TaskStatus.CANCELLED,
                    "error": reason,
                    "holder": None,
                    "holder_key": None,
                    "ticket": None,
                    "unroutable": None,
                    "unroutable_reason": None,
                }
            )

        final, _ = await self._core.mutate(task_id, cancel, by=by)
        if changed:
            data: JsonValue = {"reason": reason, "holder": holder, "token": final.token}
            await self._core.event("task.cancelled", task_id, data=data, by=by)
            if aside:  # it no longer waits for an agent
                await self._core.drop_unroutable(task_id)
        # Even when already cancelled: a crash may have cut the cascade short.
        await self._propagation.propagate(final, by=by)
        return final
