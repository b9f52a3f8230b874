"""Requeueing: putting a failed or dead task back, with a fresh attempt budget.

The record keeps its history (its attempts stay; ``budget_from`` says where the new budget
starts). Dependents that were blocked by the task wait on it again, and so on down the graph;
a retried task that still waits on a failed dependency is blocked again at once.
"""

from __future__ import annotations

from ..errors import InvalidTask
from ..models import TaskRecord
from ._core import Core, check_id
from .propagate import RETRIABLE, Propagation, fresh


class Requeue:
    """Retries of one board."""

    def __init__(self, core: Core, propagation: Propagation) -> None:
        self._core = core
        self._propagation = propagation

    async def retry(self, task_id: str, *, by: str | None = None) -> TaskRecord:
        """See ``TaskBoard.retry``."""
        check_id(task_id)

        def again(record: TaskRecord) -> TaskRecord:
            if record.status not in RETRIABLE:
                raise InvalidTask(
                    f"task {task_id!r} is {record.status.value}: only a failed or dead task can be retried"
                )
            return fresh(record)

        after, revision = await self._core.mutate(task_id, again, by=by)
        await self._core.event("task.retried", task_id, data={"by": by}, by=by)
        await self._propagation.requeued(after, revision, by=by)
        return after
