"""Dependencies: carrying a finished task's outcome to the tasks that wait on it.

A record lists the dependencies it still ``waits_on`` and its ``dependents``. Whoever finishes a
task removes it from each dependent (CAS); whoever empties a dependent's list announces it (its
ticket's message id dedupes racing announcers). A failed or dead task fails its dependents as
``blocked``, and a retry puts them back. Every step is idempotent, so whoever meets a finished
task may redo it: that is how the consequences survive a crash right after the final CAS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from pydantic import JsonValue

from ..errors import TaskNotFound
from ..models import TaskRecord, TaskStatus
from ._core import Core
from .seal import BLOCKED

_BLOCKED_BY = BLOCKED + "dependency {dep!r}"

RETRIABLE = (TaskStatus.FAILED, TaskStatus.DEAD)
"""The states ``TaskBoard.retry`` takes a task back from."""


def blocked_by(record: TaskRecord, dep: str) -> bool:
    """Whether ``record`` failed because its dependency ``dep`` did not succeed."""
    return (record.error or "").startswith(_BLOCKED_BY.format(dep=dep) + " ")


class Propagation:
    """Dependency bookkeeping of one board."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def propagate(self, record: TaskRecord, *, by: str | None = None) -> None:
        """Carry a finished task's outcome to its dependents, and tell its dependencies that one
        dependent fewer needs them. ``by``: the agent whose transition finished it (events laid on
        the way are in its name)."""
        task_id = record.task.id
        if record.status is TaskStatus.DONE:
            for dependent in record.dependents:
                await self.dependency_done(dependent, task_id, by=by)
        elif record.status.terminal:
            for dependent in record.dependents:
                await self.block(dependent, task_id, record, by=by)
        for dep in record.task.depends_on:
            await self._dependent_finished(dep, task_id, by=by)

    async def _dependent_finished(
        self, task_id: str, dependent: str, *, finished: bool = True, by: str | None = None
    ) -> None:
        """Note on ``task_id`` that ``dependent`` has finished (or, put back, has not): once all
        have, a finished ``task_id`` may expire (``Core.write``). A signed board keeps finished
        records whole, never expiring them: there is nothing to note."""
        if self._core.signed:
            return

        def note(record: TaskRecord) -> TaskRecord | None:
            if (dependent in record.finished_dependents) == finished:
                return None
            others = set(record.finished_dependents) - {dependent}
            listed = others | {dependent} if finished else others
            return record.model_copy(update={"finished_dependents": tuple(sorted(listed))})

        with contextlib.suppress(TaskNotFound):  # expired already (or never linked): nothing to keep
            await self._core.mutate(task_id, note, by=by)

    async def attach(self, task_id: str, dep: str, *, by: str | None = None) -> None:
        """Register ``task_id`` as a dependent of existing task ``dep``, or settle it if ``dep`` ended.

        A failed or dead ``dep`` records the link too: a retry of ``dep`` puts ``task_id`` back."""

        def add_dependent(record: TaskRecord) -> TaskRecord | None:
            if task_id in record.dependents or (record.status.terminal and record.status not in RETRIABLE):
                return None
            return record.model_copy(update={"dependents": tuple(sorted({*record.dependents, task_id}))})

        # A terminal dependency is returned unchanged, so its status tells how to settle ``task_id``.
        dep_record, _ = await self._core.mutate(dep, add_dependent, by=by)
        if dep_record.status is TaskStatus.DONE:
            await self.dependency_done(task_id, dep, by=by)
        elif dep_record.status.terminal:
            await self.block(task_id, dep, dep_record)

    async def dependency_done(self, task_id: str, dep: str, *, by: str | None = None) -> None:
        """``dep`` is done: ``task_id`` stops waiting on it, and is announced if now ready."""

        def drop(record: TaskRecord) -> TaskRecord | None:
            if dep not in record.waiting_on:
                return None
            return record.model_copy(update={"waiting_on": tuple(d for d in record.waiting_on if d != dep)})

        after, revision = await self._core.mutate(task_id, drop, by=by)
        # Whoever finds it ready announces (a redo after a crash included).
        if after.ready:
            await self.announce(after, revision)

    async def announce(self, record: TaskRecord, revision: int, *, again: bool = False) -> None:
        """Publish the ticket of a ready task and leave ``task.ready`` on the trail (``again``:
        a task put back after it had ended, whose first ticket must not dedupe this one)."""
        await self._core.routes.announce(record, revision, again=again)
        await self._core.event("task.ready", record.task.id, data={"route": record.task.route})

    async def announce_many(self, ready: Sequence[tuple[TaskRecord, int]]) -> None:
        """Publish the tickets of many newly ready tasks at once (their ``task.submitted`` says
        they are ready: no ``task.ready`` events)."""
        await self._core.routes.announce_many(ready)

    async def block(self, task_id: str, dep: str, dep_record: TaskRecord, *, by: str | None = None) -> None:
        """``dep`` ended without success: ``task_id`` fails as blocked, with the reason."""
        reason = f"{_BLOCKED_BY.format(dep=dep)} is {dep_record.status.value}"
        if dep_record.error:
            reason += f" ({dep_record.error})"
        await self.finish_unclaimed(task_id, TaskStatus.FAILED, reason, event="task.blocked", by=by)
        if dep_record.status in RETRIABLE:
            # A retry of ``dep`` since ``dep_record`` was read found ``task_id`` not blocked yet,
            # so it could not put it back: do it here.
            with contextlib.suppress(TaskNotFound):  # expired: nobody retried it
                current, _ = await self._core.get_entry(dep)
                if current.status not in RETRIABLE:
                    await self.unblock(task_id, dep, by=by)

    async def unblock(self, task_id: str, dep: str, *, by: str | None = None) -> None:
        """``dep`` was put back: ``task_id``, if ``dep`` had blocked it, goes back to pending too."""
        changed = False

        def unblock(record: TaskRecord) -> TaskRecord | None:
            nonlocal changed
            changed = record.status is TaskStatus.FAILED and blocked_by(record, dep)
            return fresh(record) if changed else None

        after, revision = await self._core.mutate(task_id, unblock, by=by)
        if changed:
            data: JsonValue = {"dependency": dep}
            await self._core.event("task.unblocked", task_id, data=data)
            await self.requeued(after, revision, by=by)

    async def requeued(self, record: TaskRecord, revision: int, *, by: str | None = None) -> None:
        """Carry a task put back to pending to the graph: its dependencies keep their records for
        it again, it is announced (or settled again on its dependencies), and the dependents it
        blocked get back their chance."""
        task_id = record.task.id
        # Before it can run again: its end, if noted first, would be undone here.
        for dep in record.task.depends_on:
            await self._dependent_finished(dep, task_id, finished=False, by=by)
        if record.ready:
            await self.announce(record, revision, again=True)
        for dep in record.waiting_on:
            await self.attach(task_id, dep, by=by)  # blocks it again if dep is still failed
        for dependent in record.dependents:
            await self.unblock(dependent, task_id, by=by)

    async def finish_unclaimed(
        self,
        task_id: str,
        status: TaskStatus,
        reason: str,
        *,
        event: str,
        by: str | None = None,
        still: Callable[[TaskRecord], bool] = lambda _: True,
    ) -> TaskRecord:
        """Move a task that nobody holds to a terminal ``status`` and propagate to its dependents;
        ``still`` says whether the fresh record still deserves it (judged on every CAS attempt)."""
        changed = False

        def finish(record: TaskRecord) -> TaskRecord | None:
            nonlocal changed
            changed = not (record.status.terminal or record.status is TaskStatus.CLAIMED) and still(record)
            return record.model_copy(update={"status": status, "error": reason}) if changed else None

        final, _ = await self._core.mutate(task_id, finish, by=by)
        if changed:
            data: JsonValue = {"error": reason, "status": status.value}
            await self._core.event(event, task_id, data=data, by=by)
            if final.unroutable_reason is not None:  # it no longer waits for an agent
                await self._core.drop_unroutable(task_id)
        # Even when unchanged: a crash may have cut the cascade short below this task.
        await self.propagate(final, by=by)
        return final


def fresh(record: TaskRecord) -> TaskRecord:
    """``record`` back to pending, its past attempts no longer counted and its declines forgiven
    (a retry asks every agent afresh)."""
    return record.model_copy(
        update={
            "status": TaskStatus.PENDING,
            "error": None,
            "budget_from": len(record.attempts),
            "declines": (),
            "unroutable": None,
            "unroutable_reason": None,
        }
    )
