"""Finishing tasks while the server restarts: no crashed runner, no result stored twice or denied.

Regression test: a result write in flight when the server went down waited out the request
timeout (5 s), and ``Agent._finish`` gave up after that one try (``agent.runner_crashed``); and a
retry whose first write had landed was once logged as ``task.late_result_rejected`` although its
result was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from pydantic import JsonValue
from structlog.testing import capture_logs

from ants_nats import (
    Agent,
    BoardConfig,
    EmbeddedServer,
    Lease,
    ServerUnavailable,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
    Usage,
)

from .helpers import on_log

# Longer than a write's request timeout (5 s) plus a restart: a finish whose first write went
# unanswered has time left to retry before its lease (the ticket's ack wait) runs out.
LEASE_TTL = 10.0
BATCH = 120
"""Tasks submitted before each of the two stalls."""
STALL_AFTER = 40
"""Stall the server once this many more handlers have run: with 16 runner slots busy and tasks
left in the batch, results are being written then."""

LogEntry = MutableMapping[str, Any]
"""One event as ``capture_logs`` records it."""


class Write(NamedTuple):
    """A result write (the record, then its trail event): of which task, by whom, with which token."""

    task_id: str
    agent: str
    token: int


@dataclass
class ResultWrites:
    """Wraps ``TaskBoard.complete`` to see which result writes went unanswered, and which answered."""

    complete: Callable[..., Awaitable[TaskRecord]]
    unanswered: list[Write] = field(default_factory=list)
    answered: set[Write] = field(default_factory=set)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a write went unanswered."""
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def watched(
        self, lease: Lease, result: JsonValue = None, *, usage: Usage | None = None
    ) -> TaskRecord:
        write = Write(lease.task_id, lease.agent_id, lease.token)
        try:
            record = await self.complete(lease, result, usage=usage)
        except ServerUnavailable:
            self.unanswered.append(write)
            self.lost.set()
            raise
        except Exception:  # an answer all the same (a rejection, say)
            await self._answered(write)
            raise
        await self._answered(write)
        return record

    async def _answered(self, write: Write) -> None:
        async with self.progress:
            self.answered.add(write)
            self.progress.notify_all()

    async def retried(self) -> None:
        """Return once every write that went unanswered has been made again and answered."""
        async with self.progress:
            await self.progress.wait_for(lambda: set(self.unanswered) <= self.answered)


@dataclass
class Milestone:
    """Reached when the handlers have run ``at`` tasks; the test moves it before each stall."""

    at: float = math.inf
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def arm(self, at: int) -> None:
        self.at = at
        self.reached.clear()

    def passed(self, count: int) -> None:
        if count >= self.at:
            self.reached.set()


def expected(task_id: str, n: int) -> JsonValue:
    # Deterministic, so a task run twice (a ticket redelivered after the restart) yields the same
    # result, and a repeated ending by the same holder is the same ending.
    return {"task": task_id, "square": n * n}


def server_pid(logs: Sequence[LogEntry]) -> int:
    """The process id of the server started last, from its ``server.started`` event."""
    pid = [entry["pid"] for entry in logs if entry["event"] == "server.started"][-1]
    assert isinstance(pid, int)
    return pid


def crashes(logs: Sequence[LogEntry]) -> list[LogEntry]:
    return [entry for entry in logs if entry["event"] == "agent.runner_crashed"]


@contextlib.contextmanager
def stalled(pid: int) -> Iterator[None]:
    """The server process stopped (SIGSTOP) meanwhile: connected, but answering nothing."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        # Also on failure, so the server can shut down; harmless once it was killed.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def check_results(tasks: Sequence[Task], final: Mapping[str, TaskRecord], logs: Sequence[LogEntry]) -> None:
    """Every task done once with its result, and every rejection of a result true."""
    for task in tasks:
        record = final[task.id]
        assert record.status is TaskStatus.DONE, (task.id, record.status, record.error)
        assert isinstance(task.payload, int)
        assert record.result == expected(task.id, task.payload)
        completed = [a for a in record.attempts if a.outcome == "completed"]
        assert len(completed) == 1, (task.id, record.attempts)  # written once, even when retried
    # A rejection must be true: the stored result was not written by that agent with that token.
    for entry in logs:
        if entry["event"] == "task.late_result_rejected":
            record = final[str(entry["task_id"])]
            (stored,) = [a for a in record.attempts if a.outcome == "completed"]
            assert (stored.agent, stored.token) != (entry["agent"], entry["token"]), entry


async def test_results_written_across_restarts_are_kept_and_reported_truthfully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BoardConfig(lease_ttl=LEASE_TTL, card_ttl=1.5)
    tasks = [Task(id=f"s{i:03d}", kind="square", payload=i) for i in range(2 * BATCH)]
    ran: set[str] = set()
    milestone = Milestone()

    async def square(task: Task, ctx: TaskContext) -> JsonValue:
        await asyncio.sleep(0.005)  # short, but the agents' result writes overlap
        assert isinstance(task.payload, int)
        ran.add(task.id)
        milestone.passed(len(ran))
        return expected(task.id, task.payload)

    # capture_logs swaps the shared processor list in place, so the library's cached loggers feed
    # it too (checked below with agent.started); conftest enables every level.
    with capture_logs() as logs:
        async with (
            EmbeddedServer(store_dir=tmp_path / "store") as server,
            TaskBoard.connect(server.url, config) as board,
        ):
            writes = ResultWrites(board.complete)
            monkeypatch.setattr(board, "complete", writes.watched)
            agents = [Agent(board, name=f"sq{i}", capacity=4) for i in range(4)]
            for agent in agents:
                agent.handler("square")(square)
            async with agents[0], agents[1], agents[2], agents[3]:
                # 1. A stalled server (SIGSTOP) leaves the writes in flight unanswered, as a server
                # going down under load does. Thawed, it then stores them, though their answers
                # were lost: the retries must take their own stored results as success.
                milestone.arm(STALL_AFTER)
                await board.submit_many(tasks[:BATCH])
                await asyncio.wait_for(milestone.reached.wait(), 30)
                with stalled(server_pid(logs)):
                    await asyncio.wait_for(writes.lost.wait(), 30)
                landed = writes.unanswered[0]
                # (The stalled write precedes its retry on the connection: it lands first.)
                await board.wait([landed.task_id], timeout=30)
                await server.restart()  # graceful, with those results stored
                # Every unanswered write made again before the next stall, which would otherwise
                # catch a retry too (a second timeout, past the lease: that is not this test).
                try:
                    await asyncio.wait_for(writes.retried(), LEASE_TTL)
                except TimeoutError:
                    pytest.fail(f"unanswered result writes not retried; crashes: {crashes(logs)}")

                # 2. Stalled again, then killed: the writes in flight are lost for good, and the
                # retries (into the reconnect) must store them before the leases run out.
                # (A fresh batch, so there is still work when the milestone is reached.)
                milestone.arm(len(ran) + STALL_AFTER)
                await board.submit_many(tasks[BATCH:])
                await asyncio.wait_for(milestone.reached.wait(), 30)
                writes.lost.clear()
                with stalled(server_pid(logs)):
                    await asyncio.wait_for(writes.lost.wait(), 30)
                    await server.stop(kill=True)
                await server.start()

                final = await board.wait([t.id for t in tasks], timeout=60)

    # The capture saw the library's events, so finding no crash below proves something.
    assert [entry["event"] for entry in logs].count("agent.started") == len(agents)
    assert len(writes.unanswered) >= 2  # one per stall at least: the retries were exercised
    assert crashes(logs) == []  # a finish outlasts the restart instead of giving up after one try
    check_results(tasks, final, logs)
    # The write that landed after its answer was lost stands as its writer's.
    (stored,) = [a for a in final[landed.task_id].attempts if a.outcome == "completed"]
    assert (stored.agent, stored.token) == (landed.agent, landed.token)


async def test_a_finish_that_outlives_its_lease_gives_up_with_a_warning_not_a_crash(
    tmp_path: Path,
) -> None:
    """The server goes away for good while a handler ends: the agent retries its result write
    while the lease may live, then says what happens next (the lease runs out, the task is
    redone) as a warning; its runner does not crash and it stops cleanly."""
    release = asyncio.Event()
    started = asyncio.Event()
    with capture_logs() as logs, on_log("task.settle_gave_up") as gave_up:
        async with (
            EmbeddedServer(store_dir=tmp_path / "store") as server,
            TaskBoard.connect(server.url, BoardConfig(lease_ttl=2.0)) as board,
        ):
            agent = Agent(board, name="orphan", shutdown_grace=0.5)

            @agent.handler("work")
            async def work(task: Task, ctx: TaskContext) -> JsonValue:
                started.set()
                await release.wait()
                return "late"

            async with agent:
                await board.submit(Task(id="w1", kind="work"))
                await asyncio.wait_for(started.wait(), 10)
                await server.stop(kill=True)
                release.set()
                await asyncio.wait_for(gave_up.wait(), 30)
    assert crashes(logs) == []
    [warning] = [e for e in logs if e["event"] == "task.settle_gave_up"]
    assert warning["log_level"] == "warning" and warning["ending"] == "complete"
