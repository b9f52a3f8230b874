"""Waiting for many tasks to end by hearing their ending events: one message a task.

``TaskBoard.wait`` watches every revision of every record it waits for (3 or so a task in a
pipeline: created, a dependency done, finished, its own dependent finished) and returns the final
records. A caller that only needs to know that (and how) its tasks ended can listen instead to the
ending events the trail carries anyway: plain subscriptions, nothing kept on the server, opened
before the tasks are submitted (as ``TaskBoard.run`` does for one task).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._store import translate_errors
from ..models import TaskRecord, TaskStatus
from ..names import TRAIL_SUBJECT_PREFIX, trail_filter
from ._core import check_id

if TYPE_CHECKING:
    from .facade import TaskBoard

ENDING_KINDS = ("completed", "failed", "dead", "cancelled", "blocked")
"""Events after which a task may be terminal."""
PER_TASK_UP_TO = 8
"""Tasks up to which each is listened to on subjects of its own (five a task); beyond, one
subscription a kind hears that kind's events of every task on the board."""
QUIET_S = 5.0
"""How long a wait goes without hearing an ending of its tasks before it watches their records."""
_KIND_AT = len(f"{TRAIL_SUBJECT_PREFIX}.task.")


class Endings:
    """A wait for ``task_ids`` to end, listening from the moment it is entered.

    A ``task.completed`` is final (only a done record has one laid: the event follows the write,
    and nothing takes a done task back); any other ending is checked on the record, which decides
    (a failure may be retried, or its event laid late, after a retry). A task that ended before the
    listening began is not heard: pass its record to ``wait`` as ``known``. Events are plain
    messages, so one lost while the connection broke is not heard again either: when nothing of
    the tasks is heard for ``QUIET_S`` seconds, the wait watches their records instead
    (``TaskBoard.wait``), as it always does on a signed board, whose events are nobody's word until
    judged."""

    def __init__(self, board: TaskBoard, task_ids: Iterable[str]) -> None:
        self._board = board
        self._wanted = set(task_ids)
        for task_id in self._wanted:
            check_id(task_id)
        self._ended: dict[str, TaskStatus] = {}
        self._unsure: set[str] = set()
        """Tasks whose ending event was heard but whose record must say whether they ended."""
        self._heard = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    async def __aenter__(self) -> Self:
        core = self._board._core
        if core.signed or not self._wanted:
            return self
        refs = sorted(self._wanted) if len(self._wanted) <= PER_TASK_UP_TO else ["*"]
        try:
            async with translate_errors("wait for tasks"):
                for kind in ENDING_KINDS:
                    for ref in refs:
                        subject = trail_filter(f"task.{kind}", ref)
                        self._subscriptions.append(await core.nc.subscribe(subject, cb=self._event))
        except BaseException:
            await self.__aexit__(None, None, None)  # those made before the failure
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        self._subscriptions = []

    async def _event(self, msg: Msg) -> None:
        kind, _, rest = msg.subject[_KIND_AT:].partition(".")
        task_id = rest.rpartition(".")[0]
        if task_id not in self._wanted or task_id in self._ended:
            return
        if kind == "completed":
            self._ended[task_id] = TaskStatus.DONE
        else:
            self._unsure.add(task_id)
        self._heard.set()

    async def wait(
        self, timeout: float | None = None, *, known: Iterable[TaskRecord] = ()
    ) -> dict[str, TaskStatus]:
        """How each task ended, once all have (``TimeoutError`` after ``timeout`` seconds).
        ``known``: records read or written since the listening began (a task already terminal
        there has ended)."""
        for record in known:
            if record.task.id in self._wanted and record.status.terminal:
                self._ended.setdefault(record.task.id, record.status)
        async with asyncio.timeout(timeout):
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
        """Read the records of the tasks whose ending was heard but not vouched for."""
        while self._unsure:
            task_id = self._unsure.pop()
            if task_id in self._ended:
                continue
            record = await self._board.get(task_id)
            if record.status.terminal:
                self._ended[task_id] = record.status

    async def _watch(self, remaining: set[str]) -> None:
        """Wait for ``remaining`` as ``TaskBoard.wait`` does, on their records."""
        for task_id, record in (await self._board.wait(remaining)).items():
            self._ended[task_id] = record.status
