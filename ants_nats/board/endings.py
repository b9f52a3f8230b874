"""Waiting for many tasks to end by hearing their ending events: a message a task at most.

``TaskBoard.wait`` watches every revision of every record it waits for (3 or so a task in a
pipeline: created, a dependency done, finished, its own dependent finished) and returns the final
records. A caller that only needs to know that (and how) its tasks ended can listen instead to the
ending events the trail carries anyway: plain subscriptions, nothing kept on the server, opened
before the tasks are submitted (as ``TaskBoard.run`` does for one task). Given the tasks
themselves, the wait knows their graph and listens only to those no other waits on: a task is
ready only once all its dependencies are done, and nothing takes a done task back, so a
dependent's completion says that everything it depended on is done.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from nats.aio.msg import Msg

from .._subscriptions import Subscriptions
from ..models import Task, TaskRecord, TaskStatus
from ..names import task_event_of, trail_filter
from ._core import check_id
from .deadline import deadline

if TYPE_CHECKING:
    from .facade import TaskBoard

ENDING_KINDS = ("completed", "failed", "dead", "cancelled", "blocked")
"""Events after which a task may be terminal (its record says whether it is)."""
PER_TASK_UP_TO = 256
"""Tasks up to which each one listened to has subjects of its own (five a task); beyond, one
subscription a kind hears that kind's events of every task on the board."""
QUIET_S = 5.0
"""How long a wait goes without hearing an ending of its tasks before it watches their records."""


class Endings:
    """A wait for ``tasks`` (tasks, or ids) to end, listening from the moment it is entered.

    A ``task.completed`` is final, for its task and for every task it depended on (only a done
    record has one laid: the event follows the write; a task ran only once its dependencies were
    done; nothing takes a done task back). Any other ending is checked on the record, which decides
    (a failure may be retried, or its event laid late, after a retry); a dependent that ended
    without success is no word on what it depended on, whose own endings are then listened to
    (and their records read once). A task that ended before the listening began is not heard: pass
    its record to ``wait`` as ``known``. Events are plain messages, so one lost while the
    connection broke is not heard again either: when nothing of the tasks is heard for ``QUIET_S``
    seconds, the wait watches the records of those left (``TaskBoard.wait``), as it always does on
    a signed board, whose events are nobody's word until judged."""

    def __init__(self, board: TaskBoard, tasks: Iterable[str | Task]) -> None:
        self._board = board
        self._deps: dict[str, tuple[str, ...]] = {}
        """What each task waits on, where the caller said (a ``Task``, a known record)."""
        self._wanted: set[str] = set()
        for task in tasks:
            if isinstance(task, Task):
                self._wanted.add(task.id)
                self._deps[task.id] = task.depends_on
            else:
                check_id(task)
                self._wanted.add(task)
        self._ended: dict[str, TaskStatus] = {}
        self._unsure: set[str] = set()
        """Tasks whose ending event was heard but whose record must say whether they ended."""
        self._heard = asyncio.Event()
        self._subscriptions = Subscriptions(board._core.nc, "wait for tasks")
        self._listened: set[str] | None = None
        """The tasks listened to on their own subjects (None: every task on the board)."""

    async def __aenter__(self) -> Self:
        if self._board._core.signed or not self._wanted:
            return self
        awaited = {dep for deps in self._deps.values() for dep in deps}
        sinks = self._wanted - awaited
        if len(sinks) <= PER_TASK_UP_TO:
            self._listened = set()
            await self._subscriptions.opening(functools.partial(self._listen, sinks))
        else:
            await self._subscriptions.opening(functools.partial(self._subscribe, ["*"]))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._subscriptions.close()

    async def _listen(self, task_ids: Iterable[str]) -> None:
        """Listen to the endings of ``task_ids`` too, where not every task's are heard already."""
        if self._listened is None:
            return
        fresh = sorted(set(task_ids) - self._listened)
        self._listened.update(fresh)
        await self._subscribe(fresh)

    async def _subscribe(self, refs: list[str]) -> None:
        for ref in refs:
            for kind in ENDING_KINDS:
                await self._subscriptions.add(trail_filter(f"task.{kind}", ref), self._event)

    async def _event(self, msg: Msg) -> None:
        kind, task_id = task_event_of(msg.subject)
        if task_id not in self._wanted or task_id in self._ended:
            return
        if kind == "completed":
            self._done(task_id)
        else:
            self._unsure.add(task_id)
        self._heard.set()

    def _done(self, task_id: str) -> None:
        """``task_id`` is done, and so is everything it depended on."""
        below = [task_id]
        while below:
            done = below.pop()
            if done in self._wanted and self._ended.get(done) is not TaskStatus.DONE:
                self._ended[done] = TaskStatus.DONE
                below.extend(self._deps.get(done, ()))

    async def wait(
        self, timeout: float | None = None, *, known: Iterable[TaskRecord] = ()
    ) -> dict[str, TaskStatus]:
        """How each task ended, once all have (``WaitTimeout`` after ``timeout`` seconds).
        ``known``: records read or written since the listening began (a task already terminal
        there has ended)."""
        for record in known:
            task_id = record.task.id
            if task_id in self._wanted:
                self._deps.setdefault(task_id, record.task.depends_on)
                if record.status is TaskStatus.DONE:
                    self._done(task_id)
                elif record.status.terminal:
                    self._unsure.add(task_id)  # (what it depended on is looked at)
        async with deadline(timeout, lambda: self._wanted - self._ended.keys()):
            while True:
                self._heard.clear()  # before looking: an ending heard meanwhile is looked at again
                await self._check()
                remaining = self._wanted - self._ended.keys()
                if not remaining:
                    break
                if not self._subscriptions:
                    await self._watch(remaining)
                    break
                try:
                    async with asyncio.timeout(QUIET_S):
                        await self._heard.wait()
                except TimeoutError:
                    await self._watch(remaining)
                    break
        return {task_id: self._ended[task_id] for task_id in self._wanted}

    async def _check(self) -> None:
        """Read the records of the tasks whose ending was heard but not vouched for; listen to
        what a task that ended without success depended on, unless every task's endings are
        heard (and read it once, in case it ended before)."""
        while self._unsure:
            task_id = self._unsure.pop()
            if task_id in self._ended:
                continue
            record = await self._board.get(task_id)
            self._deps.setdefault(task_id, record.task.depends_on)
            if record.status is TaskStatus.DONE:
                self._done(task_id)
            elif record.status.terminal:
                self._ended[task_id] = record.status
                if self._listened is not None:  # (else every task's endings are heard already)
                    above = self._above(task_id)
                    await self._listen(above)
                    self._unsure.update(above)

    def _above(self, task_id: str) -> set[str]:
        """The wanted tasks ``task_id`` depends on, directly or not, that have not ended."""
        found: set[str] = set()
        todo = list(self._deps.get(task_id, ()))
        while todo:
            dep = todo.pop()
            if dep in self._wanted and dep not in found:
                found.add(dep)
                todo.extend(self._deps.get(dep, ()))
        return found - self._ended.keys()

    async def _watch(self, remaining: set[str]) -> None:
        """Wait for ``remaining`` as ``TaskBoard.wait`` does, on their records."""
        for task_id, record in (await self._board.wait(remaining)).items():
            self._ended[task_id] = record.status
