"""Reading the board: every record at once, watching records change, waiting for tasks to end, and
adding up what a task and everything under it spent. Nothing here writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import Self

from nats.aio.msg import Msg

from .._connect import api_prefix
from .._pull import read_back
from .._store import is_tombstone, patiently
from .._subscriptions import Subscriptions
from .._watch import watch_messages, watch_values
from ..errors import AntsError, CorruptEntry, TaskNotFound
from ..models import TaskRecord, TaskStatus, Usage
from ..names import TASKS_BUCKET, task_event_of, trail_filter
from ._core import Core, check_id
from .deadline import deadline
from .endings import ENDING_KINDS
from .seal import stored_revision

_WINDOW_PER_TASK = 8
"""Messages of the tasks bucket read per task asked for, at first (a task has a few revisions)."""
_MIN_WINDOW = 256
_INFO_TIMEOUT_S = 5.0
_OUTCOMES = frozenset({"completed", "failed"})
"""Endings whose event names the attempt (agent and token) it ends, as the record's last attempt does."""
_RECHECK_S = 5.0
"""How often a wait for one task reads its record even when it has heard nothing."""
_FIRST_RECHECK_S = 0.5
"""The first time, sooner: a wait that hears nothing of a task that moves switches to a watch."""
_STATUS = re.compile(rb'"status"\s*:\s*"([^"\\]*)"')
_UNFINISHED = frozenset(s.value.encode() for s in TaskStatus if not s.terminal)


class Reading:
    """Reads of one board's records that take more than one key (``get`` is ``Core.get_entry``)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def all_tasks(self) -> list[TaskRecord]:
        """See ``TaskBoard.all_tasks``."""
        records: list[TaskRecord] = []
        async for key, value in watch_values(self._core.js, TASKS_BUCKET, history_only=True):
            record = self._core.record_in(key, value)
            if record is not None:
                records.append(record)
        return records

    async def recent(
        self, limit: int, keep: Callable[[TaskRecord], bool] = lambda _: True
    ) -> tuple[list[TaskRecord], int]:
        """See ``TaskBoard.recent``."""
        core, stream = self._core, f"KV_{TASKS_BUCKET}"
        js = core.js

        async def info() -> dict[str, int]:
            # Raw: nats-py's StreamState leaves out num_subjects (the bucket's keys).
            info_subject = f"{api_prefix(core.nc)}.STREAM.INFO.{stream}"
            reply = await core.nc.request(info_subject, b"", timeout=_INFO_TIMEOUT_S)
            found = json.loads(reply.data)
            if "error" in found:
                raise AntsError(f"read bucket {TASKS_BUCKET}: {found['error'].get('description')}")
            return {k: int(v) for k, v in found["state"].items() if isinstance(v, int)}

        state = await patiently(js, f"read bucket {TASKS_BUCKET}", info)
        first, last, keys = state.get("first_seq", 0), state.get("last_seq", 0), state.get("num_subjects", 0)
        if last == 0:
            return [], 0
        window = max(limit * _WINDOW_PER_TASK, _MIN_WINDOW)
        found: list[TaskRecord] = []
        readings = read_back(
            js, stream, f"$KV.{TASKS_BUCKET}.>", first=first, last=last, window=window, action="list tasks"
        )
        async with aclosing(readings) as windows:
            async for messages, _ in windows:
                latest = {msg.subject.rsplit(".", 1)[1]: msg for msg in messages}
                found = []
                for key, msg in sorted(latest.items(), key=lambda item: -item[1].metadata.sequence.stream):
                    if is_tombstone(msg.headers):
                        continue
                    record = (
                        await self._judged(key, msg) if core.signed else core.record_in(key, msg.data or b"")
                    )
                    if record is not None and keep(record):
                        found.append(record)
                        if len(found) == limit:
                            return found, keys
        return found, keys  # fewer match than asked for on the whole board

    async def watch(
        self, task_ids: Iterable[str] | None = None, *, finished_only: bool = False
    ) -> AsyncGenerator[TaskRecord, None]:
        """See ``TaskBoard.watch``. ``finished_only``: skip, unparsed, the revisions of an unsigned
        board that plainly do not finish their task (``_unfinished``); some others may come too."""
        keys = None if task_ids is None else set(task_ids)
        for task_id in keys or ():
            check_id(task_id)
        async for key, msg in watch_messages(self._core.js, TASKS_BUCKET, keys=keys):
            if is_tombstone(msg.headers):
                continue
            if self._core.signed:
                record = await self._judged(key, msg)
            elif finished_only and _unfinished(msg.data):
                continue
            else:
                data = msg.data or b""
                record = self._core.record_in(key, data)
            if record is not None:
                yield record

    async def _judged(self, task_id: str, msg: Msg) -> TaskRecord | None:
        """On a signed board, what a watched change comes to once judged: the change itself when
        it follows the last legal revision this reader knows and is legal, else the last legal
        record, read (a forged revision shows as the legal one it hides, restored)."""
        core = self._core
        meta = msg.metadata
        revision = stored_revision(
            msg.subject, meta.sequence.stream, msg.headers, msg.data or b"", meta.timestamp
        )
        judged = await core.seal.next_legal(task_id, revision)
        if judged is not None:
            return judged.record
        try:
            return (await core.get_entry(task_id))[0]
        except (TaskNotFound, CorruptEntry):
            return None

    async def wait(self, task_ids: Iterable[str], timeout: float | None = None) -> dict[str, TaskRecord]:
        """See ``TaskBoard.wait``."""
        wanted = set(task_ids)
        final: dict[str, TaskRecord] = {}

        async def consume() -> None:
            async with aclosing(self.watch(wanted, finished_only=True)) as records:
                async for record in records:
                    if record.task.id in wanted and record.status.terminal:
                        final[record.task.id] = record
                    if wanted <= final.keys():
                        return

        if wanted:
            async with deadline(timeout, lambda: wanted - final.keys()):
                await consume()
        return final

    async def final(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """``task_id``'s record once it is terminal; ``TaskNotFound`` if there is none (see ``Ending``)."""
        check_id(task_id)
        async with Ending(self, task_id) as ending:
            return await ending.final(timeout=timeout)

    async def _watched_final(self, task_id: str) -> TaskRecord:
        """``task_id``'s record once terminal, from a watch of it, read again every ``_RECHECK_S``
        too: a watch passes over a deletion, which must end the wait (``TaskNotFound``)."""
        while True:
            with contextlib.suppress(TimeoutError):
                return (await self.wait([task_id], _RECHECK_S))[task_id]
            record, _ = await self._core.get_entry(task_id)
            if record.status.terminal:
                return record

    async def usage(self, root: str) -> Usage:
        """See ``TaskBoard.usage``."""
        check_id(root)
        top, _ = await self._core.get_entry(root)
        total, seen, todo = top.usage, {root}, list(top.dependents)
        while todo:
            task_id = todo.pop()
            if task_id in seen:
                continue
            seen.add(task_id)
            try:
                record, _ = await self._core.get_entry(task_id)
            except TaskNotFound:
                continue
            total = total + record.usage
            todo.extend(record.dependents)
        return total


class Ending:
    """A wait for one task's end, the cheapest there is: plain subscriptions (no consumer to
    create, nothing kept on the server), opened with ``async with`` before the task can end, so that
    ``TaskBoard.run`` need not read the record it just submitted.

    It hears the task's events on the trail; after an ending it reads the record, which decides.
    On an unsigned board it also hears the record's writes as they are published, and an ending
    heard after its holder's write stands for the read: the outcome's event is laid only once that
    write is stored (a write whose compare-and-set failed lays none), so the last write heard that
    ends the very attempt the event names (agent, token, outcome) is the record as stored. Anything
    else (another write heard last, an ending no attempt names, a signed board, whose readers judge
    every revision) is read. The record is read again after ``_RECHECK_S`` (first
    ``_FIRST_RECHECK_S``) as well, in case the event was lost to a fault (an ending's event is
    repaired later, not always at once). A record that changed while nothing of the task was heard
    means this connection does not hear its events (they are laid in another account of a bazaar,
    whose plain subjects do not cross to this one): the wait then watches the record instead."""

    def __init__(self, reading: Reading, task_id: str) -> None:
        self._reading = reading
        self._core = reading._core
        self._task_id = task_id
        self._ending = asyncio.Event()
        self._heard_any = False
        self._written: bytes | None = None
        """The last value this connection heard written on the task's key (unsigned boards)."""
        self._heard: TaskRecord | None = None
        """The record an ending heard stands for, when its write was heard (unsigned boards)."""
        self._subscriptions = Subscriptions(self._core.nc, f"wait for {task_id}")

    async def __aenter__(self) -> Self:
        await self._subscriptions.opening(self._subscribe)
        return self

    async def _subscribe(self) -> None:
        core, task_id = self._core, self._task_id
        await self._subscriptions.add(trail_filter("task.*", task_id), self._event)
        if not core.signed:
            await self._subscriptions.add(core.tasks.subject(task_id), self._wrote)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._subscriptions.close()

    async def _wrote(self, msg: Msg) -> None:
        self._written = None if is_tombstone(msg.headers) else msg.data

    async def _event(self, msg: Msg) -> None:
        kind, _ = task_event_of(msg.subject)
        self._heard_any = self._heard_any or kind != "submitted"  # (a submitter hears its own, always)
        if kind in ENDING_KINDS:
            if self._heard is None:
                self._heard = self._vouched(kind, msg.data)
            self._ending.set()

    def _vouched(self, kind: str, event: bytes) -> TaskRecord | None:
        """The last write heard, if the ending ``kind`` (whose event is ``event``) vouches for it."""
        if self._written is None or kind not in _OUTCOMES:
            return None
        try:
            said = json.loads(event)
            agent, token = said["agent"], said["token"]
        except (ValueError, TypeError, KeyError):
            return None
        record = self._core.record_in(self._task_id, self._written)
        if record is None or record.task.id != self._task_id or not record.status.terminal:
            return None
        last = record.attempts[-1] if record.attempts else None
        if last is None or (last.agent, last.token, last.outcome) != (agent, token, kind):
            return None
        return record

    async def final(
        self, known: tuple[TaskRecord, int] | None = None, timeout: float | None = None
    ) -> TaskRecord:
        """The task's record once it is terminal (``TaskNotFound`` if there is none), within
        ``timeout`` seconds. ``known``: its record and revision, read or written since this wait
        was opened (else it is read first)."""
        core, task_id = self._core, self._task_id
        async with deadline(timeout, lambda: [task_id]):
            first = None if known is None else known[1]
            recheck = _FIRST_RECHECK_S
            while self._heard is None:
                if known is not None:
                    record, revision = known  # an ending heard since then is still set
                    known = None
                else:
                    self._ending.clear()  # before reading: an ending heard meanwhile is read again
                    record, revision = await core.get_entry(task_id)
                if record.status.terminal:
                    return record
                first = revision if first is None else first
                if revision != first and not self._heard_any:
                    return await self._reading._watched_final(task_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(recheck):
                        await self._ending.wait()
                recheck = _RECHECK_S
            return self._heard


def _unfinished(value: bytes | None) -> bool:
    """Whether a record's JSON plainly says its task is not finished, without parsing it: every
    ``"status"`` member in it (the record's own, and any a payload or result holds) names a status
    that is not terminal. A finished record always names its own terminal status, so it is never
    taken for unfinished; a value this cannot tell (no plain ``"status"`` member) is parsed."""
    found = _STATUS.findall(value or b"")
    return bool(found) and all(status in _UNFINISHED for status in found)
