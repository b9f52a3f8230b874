"""The demo swarm: agents with different capabilities work through a document pipeline DAG.

fetch(doc) -> parse(doc) -> summarise(doc) for each document, then one ``publish`` task waiting on
every summary. One agent is unreliable (its handlers fail now and then), so retries show up.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from pydantic import JsonValue

from .agent import Agent
from .board import BoardConfig, TaskBoard
from .context import Handler, TaskContext
from .models import Task, TaskRecord


@dataclass(frozen=True)
class AgentSpec:
    """One agent of the demo swarm."""

    name: str
    capabilities: tuple[str, ...]
    failure_rate: float = 0.0


SWARM = (
    AgentSpec("fetcher-1", ("net",)),
    AgentSpec("fetcher-2", ("net",)),
    AgentSpec("parser", ("parse",)),
    AgentSpec("summariser-1", ("llm",)),
    AgentSpec("summariser-2", ("llm", "parse"), failure_rate=0.3),
    AgentSpec("publisher", ("net", "publish")),
)


def pipeline(documents: int) -> list[Task]:
    """The demo DAG for ``documents`` documents."""
    tasks: list[Task] = []
    for i in range(documents):
        doc = f"doc{i:02d}"
        tasks += [
            Task(
                id=f"fetch-{doc}",
                kind="fetch",
                requires=("net",),
                payload={"url": f"https://example.org/{doc}"},
            ),
            Task(id=f"parse-{doc}", kind="parse", requires=("parse",), depends_on=(f"fetch-{doc}",)),
            Task(id=f"summarise-{doc}", kind="summarise", requires=("llm",), depends_on=(f"parse-{doc}",)),
        ]
    tasks.append(
        Task(
            id="publish",
            kind="publish",
            requires=("publish",),
            depends_on=tuple(f"summarise-doc{i:02d}" for i in range(documents)),
        )
    )
    return tasks


async def _fetch(task: Task, ctx: TaskContext) -> JsonValue:
    await asyncio.sleep(random.uniform(0.01, 0.05))
    url = task.payload["url"] if isinstance(task.payload, dict) else "?"
    return {"url": url, "text": f"contents of {url} " * 5}


async def _parse(task: Task, ctx: TaskContext) -> JsonValue:
    (fetched,) = (await ctx.dependency_results()).values()
    text = fetched["text"] if isinstance(fetched, dict) else ""
    words: list[JsonValue] = [*str(text).split()]
    return {"words": words}


async def _summarise(task: Task, ctx: TaskContext) -> JsonValue:
    (parsed,) = (await ctx.dependency_results()).values()
    words = parsed["words"] if isinstance(parsed, dict) else []
    await asyncio.sleep(random.uniform(0.02, 0.08))
    return " ".join(str(w) for w in (words if isinstance(words, list) else [])[:4])


async def _publish(task: Task, ctx: TaskContext) -> JsonValue:
    summaries = await ctx.dependency_results()
    return {"published": len(summaries)}


HANDLERS: dict[str, Handler] = {
    "fetch": _fetch,
    "parse": _parse,
    "summarise": _summarise,
    "publish": _publish,
}


def _unreliable(handler: Handler, rate: float, rng: random.Random) -> Handler:
    async def flaky(task: Task, ctx: TaskContext) -> JsonValue:
        if rng.random() < rate:
            raise RuntimeError("flaky agent dropped the ball")
        return await handler(task, ctx)

    return flaky


@dataclass
class DemoSummary:
    """What the demo reports at the end."""

    records: list[TaskRecord]
    seconds: float

    @property
    def by_status(self) -> Counter[str]:
        """Task count per final status."""
        return Counter(r.status.value for r in self.records)

    @property
    def retries(self) -> int:
        """Attempts beyond the first, over all tasks."""
        return sum(max(len([a for a in r.attempts if a.outcome != "released"]) - 1, 0) for r in self.records)

    @property
    def work_by_agent(self) -> Counter[str]:
        """Completed tasks per agent."""
        return Counter(a.agent for r in self.records for a in r.attempts if a.outcome == "completed")


async def run_demo(
    url: str, *, documents: int, seed: int, progress: Callable[[int, int, TaskRecord], None]
) -> DemoSummary:
    """Run the swarm against the server at ``url`` until the whole DAG is terminal."""
    rng = random.Random(seed)
    tasks = pipeline(documents)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        board = await stack.enter_async_context(TaskBoard.connect(url, BoardConfig(lease_ttl=5.0)))
        for spec in SWARM:
            agent = Agent(board, name=spec.name, capabilities=spec.capabilities, capacity=2)
            for kind, handler in HANDLERS.items():
                chosen = _unreliable(handler, spec.failure_rate, rng) if spec.failure_rate else handler
                agent.handler(kind)(chosen)
            await stack.enter_async_context(agent)
        await board.submit_many(tasks)
        wanted = {t.id for t in tasks}
        final: dict[str, TaskRecord] = {}
        async for record in board.watch():
            if record.task.id in wanted and record.status.terminal and record.task.id not in final:
                final[record.task.id] = record
                progress(len(final), len(wanted), record)
            if len(final) == len(wanted):
                break
    return DemoSummary(records=list(final.values()), seconds=time.monotonic() - started)
