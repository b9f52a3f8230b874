"""Requeueing: putting a failed or dead task back, with a fresh attempt budget.

The record keeps its history (its attempts stay; ``budget_from`` says where the new budget
starts). Dependents that were blocked by the task wait on it again, and so on down the graph;
a retried task that still waits on a failed dependency is blocked again at once.
"""

from __future__ import annotations

from pydantic import JsonValue

from ..errors import InvalidTask
from ..models import TaskRecord, TaskStatus
from ._core import Core, check_id
from .propagate import Propagation, blocked_by


class Requeue:
    """Retries of one board."""

    def __init__(self, core: Core, propagation: Propagation) -> None:
        self._core = core
        self._propagation = propagation

    async def retry(self, task_id: str, *, by: str | None = None) -> TaskRecord:
        """See ``TaskBoard.retry``."""
        check_id(task_id)

        def again(record: TaskRecord) -> TaskRecord:
            if record.status not in (TaskStatus.FAILED, TaskStatus.DEAD):
                raise InvalidTask(
                    f"task {task_id!r} is {record.status.value}: only a failed or dead task can be retried"
                )
            return _fresh(record)

        after, revision = await self._core.mutate(task_id, again)
        await self._core.event("task.retried", task_id, data={"by": by}, by=by)
        await self._requeued(after, revision)
        return after

    async def _requeued(self, record: TaskRecord, revision: int) -> None:
        """Announce a task back to pending (or settle it again on its dependencies), then give its
        blocked dependents back their chance."""
        task_id = record.task.id
        if record.ready:
            await self._propagation.announce(record, revision, again=True)
        for dep in record.waiting_on:
            await self._propagation.attach(task_id, dep)  # blocks it again if dep is still failed
        for dependent in record.dependents:
            await self._unblock(dependent, task_id)

    async def _unblock(self, task_id: str, dep: str) -> None:
        changed = False

        def unblock(record: TaskRecord) -> TaskRecord | None:
            nonlocal changed
            changed = record.status is TaskStatus.FAILED and blocked_by(record, dep)
            return _fresh(record) if changed else None

        after, revision = await self._core.mutate(task_id, unblock)
        if changed:
            data: JsonValue = {"dependency": dep}
            await self._core.event("task.unblocked", task_id, data=data)
            await self._requeued(after, revision)


def _fresh(record: TaskRecord) -> TaskRecord:
    """``record`` back to pending, its past attempts no longer counted."""
    return record.model_copy(
        update={"status": TaskStatus.PENDING, "error": None, "budget_from": len(record.attempts)}
    )
