"""What a handler is given: the public contract of writing a handler (what it may raise to end its
attempt otherwise than by failing is in ``signals.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import JsonValue

from .board import Lease, TaskBoard
from .models import ArtifactRef, Task, Usage
from .signals import AskingForInput


@dataclass
class TaskContext:
    """What a handler gets besides the task: its lease, the board, and a lost-lease signal.

    When the lease is lost (it expired, e.g. after a long network partition) the handler is
    cancelled and ``lease_lost`` is set: its result would be rejected anyway. When someone cancels
    the task (``board.cancel``), ``cancelled`` is set first, then the handler's coroutine is
    cancelled.
    """

    task: Task
    lease: Lease
    board: TaskBoard
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    answers: tuple[str, ...] = ()
    """Answers to the questions this task's handlers asked before (``ask``), in order."""
    spent: Usage = field(default_factory=Usage)
    """What this attempt has reported spending so far (``usage``)."""
    _asked: int = field(default=0, repr=False)

    @property
    def payload(self) -> JsonValue:
        """The task's payload (the runtime has read a large one from the artifact store already)."""
        return self.task.payload

    async def dependency_results(self) -> dict[str, JsonValue]:
        """Results of the task's dependencies (all done, or the task would not have been claimable),
        large ones read from the artifact store."""
        return {dep: await self.board.result_of(await self.board.get(dep)) for dep in self.task.depends_on}

    async def put_artifact(self, name: str, data: bytes | Path) -> ArtifactRef:
        """Store a file (a ``Path``, streamed from disk) or bytes too big for a result, as artifact
        ``<task id>/<token>-<agent>/<name>`` in ``ants_artifacts``; return its reference, to put in
        the result or on a mark (``board.get_artifact(ref)`` reads it from any host). It expires
        with ``BoardConfig.artifact_ttl``; ``PayloadTooLarge`` above ``max_artifact_bytes``."""
        if not isinstance(data, bytes | Path):
            raise TypeError(f"put_artifact takes bytes or a Path, not {type(data).__name__}")
        prefix = f"{self.task.id}/{self.lease.token}-{self.lease.agent_id}"
        return await self.board.artifacts.put(f"{prefix}/{name}", data)

    async def confirm(self) -> int:
        """Write this task's claim now if it is still deferred, and return the final fencing token:
        call it before handing the token to another system (see ``Lease``)."""
        await self.board.confirm(self.lease)
        return self.lease.token

    def usage(self, *, tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0) -> None:
        """Record what the handler spent (call it as often as you like; it adds up). It is kept on
        the attempt when it ends, counted per agent and capability by the ledger, and charged to
        the task's budget, if it has one."""
        self.spent = self.spent + Usage(tokens_in=tokens_in, tokens_out=tokens_out, cost=cost)

    async def ask(self, question: str, *, timeout: float = 86_400.0) -> str:
        """Ask a human (or another agent) and get the answer.

        The first time, this parks the task: its lease is released (not an attempt), its status
        becomes ``waiting_input`` with the question in its record and on the trail, and the handler
        stops here. ``board.answer`` (``ants-nats answer ID TEXT``) makes it claimable again; the
        handler then runs again from the start, on whichever agent claims it, and this call
        returns the answer (the n-th ``ask`` of a run returns the n-th answer). So do the work
        before a question again, or keep it in an artifact. Unanswered after ``timeout`` seconds,
        the task fails with the reason."""
        index, self._asked = self._asked, self._asked + 1
        if index < len(self.answers):
            return self.answers[index]
        raise AskingForInput(question, timeout)

    async def progress(self, fraction: float, note: str = "") -> None:
        """Report progress (0..1) on the trail, as ``task.progress``."""
        await self.board.progress(self.lease, fraction, note)


Handler = Callable[[Task, TaskContext], Awaitable[JsonValue]]
"""``async def handler(task, ctx) -> result``: the result must be JSON."""
