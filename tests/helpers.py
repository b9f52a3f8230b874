"""Shared test helpers: a recording handler and swarms of agents."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import structlog
from pydantic import JsonValue

from ants_nats import Agent, Task, TaskBoard, TaskContext, TaskRecord
from ants_nats._watch import watch_values
from ants_nats.models import AgentLedger, TrailEvent
from ants_nats.names import trail_filter


@dataclass
class Recorder:
    """Counts handler runs and detects two agents working on one task at the same time."""

    runs: Counter[str] = field(default_factory=Counter)
    active: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    by_agent: Counter[str] = field(default_factory=Counter)

    async def handle(self, task: Task, ctx: TaskContext) -> JsonValue:
        if task.id in self.active:
            self.overlaps.append(task.id)
        self.active.add(task.id)
        try:
            await asyncio.sleep(0)  # yield, so overlapping runs would interleave
            self.runs[task.id] += 1
            self.by_agent[ctx.lease.agent_id] += 1
            return {"task": task.id, "agent": ctx.lease.agent_id}
        finally:
            self.active.discard(task.id)


EventDict = MutableMapping[str, object]


@contextmanager
def log_spy(heard: Callable[[EventDict], None]) -> Iterator[None]:
    """Call ``heard`` with every log call the library makes, while in the block.

    structlog's processor list is shared by every (even cached) logger, so a spy inserted into it
    sees all log calls; it is removed on exit.
    """

    def spy(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
        heard(event_dict)
        return event_dict

    processors = structlog.get_config()["processors"]
    processors.insert(0, spy)
    try:
        yield
    finally:
        processors.remove(spy)


@contextmanager
def on_log(event: str) -> Iterator[asyncio.Event]:
    """An ``asyncio.Event`` set when the library logs ``event``."""
    seen = asyncio.Event()

    def heard(event_dict: EventDict) -> None:
        if event_dict.get("event") == event:
            seen.set()

    with log_spy(heard):
        yield seen


@asynccontextmanager
async def swarm(
    board: TaskBoard, recorder: Recorder, n: int, *, kind: str = "work", capacity: int = 1
) -> AsyncIterator[list[Agent]]:
    """``n`` agents sharing ``board``'s connection, each handling ``kind`` with ``recorder``."""
    async with AsyncExitStack() as stack:
        agents = []
        for i in range(n):
            agent = Agent(board, name=f"ant{i}", capacity=capacity)
            agent.handler(kind)(recorder.handle)
            agents.append(await stack.enter_async_context(agent))
        yield agents


async def until_ledger(board: TaskBoard, agent: str, done: Callable[[AgentLedger], bool]) -> AgentLedger:
    """Watch ``ants_ledger`` until ``agent``'s entry satisfies ``done``."""
    async with aclosing(watch_values(board.nc.jetstream(), "ants_ledger")) as values:
        async for key, value in values:
            if key == agent:
                ledger = AgentLedger.model_validate_json(value)
                if done(ledger):
                    return ledger
    raise AssertionError("watch ended")


async def until_event(board: TaskBoard, kind: str, ref: str) -> TrailEvent:
    """The first ``kind`` event about ``ref``, once it is on the trail (events follow their CAS)."""
    async with aclosing(board.trail.follow(trail_filter(kind, ref))) as events:
        async for event in events:
            return event
    raise AssertionError("follow ended")


async def until_tasks(
    board: TaskBoard, done: Callable[[dict[str, TaskRecord]], bool]
) -> dict[str, TaskRecord]:
    """Watch the tasks bucket until the records seen so far satisfy ``done``."""
    records: dict[str, TaskRecord] = {}
    async with aclosing(board.watch()) as changes:
        async for record in changes:
            records[record.task.id] = record
            if done(records):
                return records
    raise AssertionError("watch ended")
