"""The contender: ants-nats, through its public API only, each measurement on a fresh embedded server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

from _results import Latency, Rate, Traffic, traffic
from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    EmbeddedServer,
    Handler,
    Identity,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
)
from ants_nats.attempt import RunningAttempt

KIND = "noop"
SUBMIT_CHUNK = 200
"""Tasks per ``submit_many`` call while agents work."""
RATE_CHUNK = 500
"""Tasks per ``submit_many`` call when measuring submission alone."""
SETTLE_S = 0.5
"""Pause after the warm-up task, so every agent has bound the route and is waiting on it."""
READY_TIMEOUT_S = 30.0


async def _noop(task: Task, ctx: TaskContext) -> JsonValue:
    return None


SUBMITTER = "bench"
"""``created_by`` of every task (on a signed board, the board signs as it)."""


@asynccontextmanager
async def _board(signed: bool = False) -> AsyncIterator[tuple[EmbeddedServer, TaskBoard]]:
    async with (
        EmbeddedServer() as server,
        TaskBoard.connect(server.url, BoardConfig(lease_ttl=10.0, signed=signed)) as board,
    ):
        board.sign_as(SUBMITTER, Identity.generate())
        yield server, board


Counting = Literal["done", "wait", "endings"]
"""How ``throughput`` sees a task finished: ``done``, in the agents' process, when the agent that
ran it has its completion stored (the record's compare-and-set and its ``task.completed`` event,
both acknowledged by the server), as taskiq's ``post_save`` hook and FastStream's handler return
are seen in their worker's process; ``wait``, by the submitter's ``board.wait()`` (a watch of the
task records: one more delivery per revision); ``endings``, by the submitter's
``board.endings()`` (hearing each task's ``task.completed``: one more delivery a task)."""


def _counting(done: Callable[[str], None]) -> type[RunningAttempt]:
    """An attempt class that calls ``done(task id)`` once its attempt has completed the task (the
    record's compare-and-set and its event are stored, the ticket is done with)."""

    class Counted(RunningAttempt):
        async def run(self, handler: Handler) -> None:
            await super().run(handler)
            if self.ending == "completed":
                done(self.task_id)

    return Counted


@asynccontextmanager
async def _swarm(
    board: TaskBoard, count: int, capacity: int = 1, attempts: type[RunningAttempt] | None = None
) -> AsyncIterator[list[Agent]]:
    """``count`` agents of ``capacity`` sharing the board's connection, every one pulling on exit
    (running ``attempts``, if given, instead of the agent's own attempt class)."""
    async with AsyncExitStack() as stack:
        agents = []
        for i in range(count):
            agent = Agent(board, name=f"bench{i}", capacity=capacity)
            if attempts is not None:
                agent.attempt_class = attempts
            agent.handler(KIND)(_noop)
            agents.append(await stack.enter_async_context(agent))
        async with asyncio.timeout(READY_TIMEOUT_S):
            while len(await board.directory.cards()) < count:  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.05)
            # The first task registers the route; every agent then discovers it and starts pulling.
            await board.submit(Task(id="warmup", kind=KIND, created_by=SUBMITTER))
            await board.wait(["warmup"])
        await asyncio.sleep(SETTLE_S)
        yield agents


def _batch(tasks: int, prefix: str = "t") -> list[Task]:
    return [Task(id=f"{prefix}{i:06d}", kind=KIND, created_by=SUBMITTER) for i in range(tasks)]


async def throughput(
    agents: int, tasks: int, *, signed: bool = False, capacity: int = 1, count: Counting = "wait"
) -> Rate:
    """``tasks`` no-op tasks through ``agents`` agents of ``capacity``, submission overlapping the
    work (on a signed board, with ``signed``), until every task is seen finished as ``count`` says."""
    batch = _batch(tasks)
    ids = [t.id for t in batch]
    unfinished = set(ids)
    finished = asyncio.Event()

    def done(task_id: str) -> None:
        unfinished.discard(task_id)
        if not unfinished:
            finished.set()

    attempts = _counting(done) if count == "done" else None
    async with _board(signed) as (server, board), _swarm(board, agents, capacity, attempts):

        async def submit() -> None:
            for start in range(0, tasks, SUBMIT_CHUNK):
                await board.submit_many(batch[start : start + SUBMIT_CHUNK])

        async def all_done() -> None:
            if count == "wait":
                await board.wait(ids)
            else:
                await finished.wait()

        before = await traffic(server.monitor_port)
        started, cpu = time.perf_counter(), time.process_time()
        async with asyncio.timeout(60 + tasks / 10):
            if count == "endings":
                async with board.endings(batch) as endings:  # listening before the submission
                    await submit()
                    await endings.wait()
            else:
                await asyncio.gather(all_done(), submit())
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = await traffic(server.monitor_port)
        wanted = set(ids)
        attempts = [len(r.attempts) for r in await board.all_tasks() if r.task.id in wanted]
    return Rate(tasks, seconds, after - before, sum(attempts) / len(attempts), cpu)


async def submit_rate(tasks: int) -> Rate:
    """``submit_many`` in chunks of ``RATE_CHUNK`` with no agent running."""
    batch = _batch(tasks)
    async with _board() as (server, board):
        before = await traffic(server.monitor_port)
        started = time.perf_counter()
        for start in range(0, tasks, RATE_CHUNK):
            await board.submit_many(batch[start : start + RATE_CHUNK])
        seconds = time.perf_counter() - started
        after = await traffic(server.monitor_port)
    return Rate(tasks, seconds, after - before)


async def submit_latency(samples: int) -> Latency:
    """``board.submit()`` of one task, ``samples`` times in sequence, no agent running."""
    batch = _batch(samples, prefix="s")
    found = []
    async with _board() as (_, board):
        await board.submit(Task(id="warmup", kind=KIND, created_by=SUBMITTER))
        for task in batch:
            started = time.perf_counter()
            await board.submit(task)
            found.append(time.perf_counter() - started)
    return Latency(tuple(found))


async def idle_latency(samples: int, agents: int = 4) -> tuple[Latency, Latency, Traffic]:
    """Submit -> completion of one task at a time with ``agents`` idle agents waiting.

    Completion is seen through one ``board.watch()`` started beforehand. Returns the latencies, the
    time ``submit()`` itself took, and the traffic of the whole series.
    """
    batch = _batch(samples, prefix="l")
    pending: dict[str, asyncio.Future[float]] = {}
    total: list[float] = []
    submitting: list[float] = []

    async def observe(board: TaskBoard) -> None:
        async with contextlib.aclosing(board.watch()) as records:
            async for record in records:
                _resolve(pending, record)

    async with _board() as (server, board), _swarm(board, agents):
        watcher = asyncio.create_task(observe(board))
        try:
            before = await traffic(server.monitor_port)
            loop = asyncio.get_running_loop()
            for task in batch:
                done = pending[task.id] = loop.create_future()
                started = time.perf_counter()
                await board.submit(task)
                submitting.append(time.perf_counter() - started)
                async with asyncio.timeout(30):
                    total.append(await done - started)
            after = await traffic(server.monitor_port)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return Latency(tuple(total)), Latency(tuple(submitting)), after - before


def _resolve(pending: dict[str, asyncio.Future[float]], record: TaskRecord) -> None:
    future = pending.get(record.task.id)
    if future is not None and not future.done() and record.status.terminal:
        future.set_result(time.perf_counter())


async def watch_cost(records: int) -> float:
    """Server messages per record of one pass over the task bucket (``all_tasks``: a KV watcher)."""
    async with _board() as (server, board):
        await board.submit_many(_batch(records))
        before = await traffic(server.monitor_port)
        assert len(await board.all_tasks()) == records
        after = await traffic(server.monitor_port)
    return (after - before).msgs / records
