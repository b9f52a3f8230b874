"""The demo swarm: independent agent processes work through a document pipeline DAG.

fetch(doc) -> parse(doc) -> summarise(doc) for each document, then one ``publish`` task waiting on
every summary. Each agent is its own process (``python -m ants_nats.cli.demo_agent``); one is
unreliable (its handlers fail now and then) and one is adversarial (it claims work and abandons it),
so retries, expiries and the reputation system show up. Nothing but the NATS server connects them.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pydantic import JsonValue

from ._aio import cancel_and_wait, gather_bounded, stop_process
from ._connect import jetstream
from ._watch import watch_values
from .agent import Agent
from .attempt import RunningAttempt
from .board import BoardConfig, TaskBoard
from .context import Handler, TaskContext
from .errors import AntsError, TaskNotFound
from .ledger import Ledger, accountable
from .models import AgentLedger, Task, TaskRecord, TrailEvent, Usage, parse_or_none, utcnow
from .names import LEDGER_BUCKET
from .verify import Verifier


@dataclass(frozen=True)
class AgentSpec:
    """One agent process of the demo swarm."""

    name: str
    capabilities: tuple[str, ...]
    fail_rate: float = 0.0
    abandons: bool = False


SWARM = (
    AgentSpec("fetcher-1", ("net",)),
    AgentSpec("fetcher-2", ("net",)),
    AgentSpec("parser", ("parse",)),
    AgentSpec("summariser-1", ("llm",)),
    AgentSpec("summariser-2", ("llm", "parse"), fail_rate=0.3),
    AgentSpec("publisher", ("net", "publish")),
    AgentSpec("freeloader", ("parse", "llm"), abandons=True),
)


_ATTEMPTS = 6
_step = partial(Task, max_attempts=_ATTEMPTS)


def pipeline(documents: int, run: str = "") -> list[Task]:
    """The demo DAG for ``documents`` documents (every id ending in ``run``, when given).

    Every step may be tried ``_ATTEMPTS`` times: the swarm includes an unreliable and an
    adversarial agent, and a pipeline facing such agents retries generously.
    """
    tasks: list[Task] = []
    for i in range(documents):
        doc = f"doc{i:02d}"
        tasks += [
            _step(
                id=f"fetch-{doc}{run}",
                kind="fetch",
                requires=("net",),
                payload={"url": f"https://example.org/{doc}"},
            ),
            _step(
                id=f"parse-{doc}{run}", kind="parse", requires=("parse",), depends_on=(f"fetch-{doc}{run}",)
            ),
            _step(
                id=f"summarise-{doc}{run}",
                kind="summarise",
                requires=("llm",),
                depends_on=(f"parse-{doc}{run}",),
            ),
        ]
    tasks.append(
        _step(
            id=f"publish{run}",
            kind="publish",
            requires=("publish",),
            depends_on=tuple(f"summarise-doc{i:02d}{run}" for i in range(documents)),
        )
    )
    return tasks


async def _run_suffix(board: TaskBoard, documents: int, say: Say) -> str:
    """``""`` on a board that holds none of the pipeline's ids (the docs' ``fetch-doc00``), else a
    suffix of this run's own: a board an earlier run used is run on again, not waited on."""
    ids = [task.id for task in pipeline(documents)]
    found = await gather_bounded(_exists(board, task_id) for task_id in ids)
    if not any(found):
        return ""
    run = f"-{secrets.token_hex(3)}"
    say(f"  (the board holds an earlier demo's tasks: this run's ids end in {run})")
    return run


async def _exists(board: TaskBoard, task_id: str) -> bool:
    try:
        await board.get(task_id)
    except TaskNotFound:
        return False
    return True


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
    summary = " ".join(str(w) for w in (words if isinstance(words, list) else [])[:4])
    # The "LLM" of the pipeline reports what it spent, as a real one would (about 4 bytes a token).
    ctx.usage(
        tokens_in=len(json.dumps(words)) // BYTES_PER_TOKEN + 1,
        tokens_out=len(summary) // BYTES_PER_TOKEN + 1,
    )
    return summary


async def _publish(task: Task, ctx: TaskContext) -> JsonValue:
    summaries = await ctx.dependency_results()
    return {"published": len(summaries)}


HANDLERS: dict[str, Handler] = {
    "fetch": _fetch,
    "parse": _parse,
    "summarise": _summarise,
    "publish": _publish,
}


def unreliable(handler: Handler, rate: float, rng: random.Random) -> Handler:
    """``handler``, failing with probability ``rate``."""

    async def flaky(task: Task, ctx: TaskContext) -> JsonValue:
        if rng.random() < rate:
            raise RuntimeError("flaky agent dropped the ball")
        return await handler(task, ctx)

    return flaky


class AbandonedAttempt(RunningAttempt):
    """An attempt that writes its claim and then never heartbeats: its lease expires."""

    async def _heartbeat(self) -> None:
        await asyncio.Event().wait()


class AbandoningAgent(Agent):
    """The demo's adversary: it claims work and never heartbeats nor finishes it."""

    attempt_class = AbandonedAttempt


async def _never(task: Task, ctx: TaskContext) -> JsonValue:
    await asyncio.Event().wait()
    return None


def agent_for(board: TaskBoard, spec: AgentSpec, *, seed: int) -> Agent:
    """The agent a demo process runs for ``spec``: the pipeline's ``HANDLERS``, made flaky or
    abandoned as it says (``seed`` seeds its failures)."""
    cls = AbandoningAgent if spec.abandons else Agent
    agent = cls(board, name=spec.name, capabilities=spec.capabilities, capacity=2, shutdown_grace=2.0)
    rng = random.Random(seed)
    for kind, handler in HANDLERS.items():
        chosen = _never if spec.abandons else handler
        if spec.fail_rate and not spec.abandons:
            chosen = unreliable(handler, spec.fail_rate, rng)
        agent.handler(kind)(chosen)
    return agent


BYTES_PER_TOKEN = 4
"""A rough size of an LLM token in bytes of English text, to set the coordination against the work."""


@dataclass
class DemoSummary:
    """What the demo reports at the end."""

    records: list[TaskRecord]
    seconds: float
    ledgers: list[AgentLedger]
    messages: int | None
    bytes: int | None

    @property
    def by_status(self) -> Counter[str]:
        """Task count per final status."""
        return Counter(r.status.value for r in self.records)

    @property
    def retries(self) -> int:
        """Attempts that failed or were abandoned, hence redone, over all tasks."""
        return sum(r.counted_attempts for r in self.records)

    @property
    def usage(self) -> Usage:
        """What the handlers reported spending, over all tasks."""
        return sum((r.usage for r in self.records), Usage())

    @property
    def coordination_share(self) -> float | None:
        """The coordination's share of all units: its bytes through the server, counted as tokens
        (``BYTES_PER_TOKEN`` bytes each), against those and the tokens the work reported."""
        if self.bytes is None or not self.usage.tokens:
            return None
        coordination = self.bytes / BYTES_PER_TOKEN
        return coordination / (coordination + self.usage.tokens)

    @property
    def work_by_agent(self) -> Counter[str]:
        """Completed tasks per agent."""
        return Counter(a.agent for r in self.records for a in r.attempts if a.outcome == "completed")


Say = Callable[[str], None]
Traffic = Callable[[], Awaitable[tuple[int, int]]]


def _agent_command(url: str, spec: AgentSpec, *, lease_ttl: float, seed: int) -> list[str]:
    # The demo's own entry: ``ants-nats agent`` has no unreliable nor abandoning agents.
    command = [sys.executable, "-m", "ants_nats.cli.demo_agent", "--log-level", "ERROR", "agent"]
    command += [
        "--server",
        url,
        "--name",
        spec.name,
        "--lease-ttl",
        str(lease_ttl),
        "--random-seed",
        str(seed),
    ]
    for cap in spec.capabilities:
        command += ["--cap", cap]
    if spec.fail_rate:
        command += ["--fail-rate", str(spec.fail_rate)]
    if spec.abandons:
        command.append("--abandon")
    return command


def _terminal(event: TrailEvent) -> bool:
    data = event.data if isinstance(event.data, dict) else {}
    if event.kind in ("task.completed", "task.dead", "task.blocked"):
        return True
    return event.kind == "task.failed" and data.get("status") in ("failed", "dead")


async def run_demo(
    url: str,
    *,
    documents: int,
    seed: int,
    say: Say,
    traffic: Traffic | None = None,
    swarm: Sequence[AgentSpec] = SWARM,
    lease_ttl: float = 3.0,
) -> DemoSummary:
    """Run the swarm against the server at ``url`` until the whole DAG is terminal (on a board
    that holds an earlier run's tasks, under ids of this run's own)."""
    config = BoardConfig(lease_ttl=lease_ttl)
    async with AsyncExitStack() as stack:
        board = await stack.enter_async_context(TaskBoard.connect(url, config, name="demo"))
        tasks = pipeline(documents, await _run_suffix(board, documents, say))
        wanted = {t.id for t in tasks}
        others = {card.id for card in await board.directory.cards()}  # agents not of this demo
        ledger = Ledger(board.nc, half_life=config.reputation.half_life)
        await ledger.ensure()
        projector = asyncio.create_task(ledger.project(board.trail, verifier=Verifier(board.directory)))
        stack.push_async_callback(cancel_and_wait, [projector])
        processes: list[asyncio.subprocess.Process] = []
        # All stop together (each drains its own work), so shutdown takes one grace period, not seven.
        stack.push_async_callback(lambda: asyncio.gather(*(stop_process(p) for p in processes)))
        for i, spec in enumerate(swarm):
            command = _agent_command(url, spec, lease_ttl=lease_ttl, seed=seed + i)
            processes.append(
                await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
            )
        ours = await _until_agents(board, {spec.name for spec in swarm}, others, say)
        before = await traffic() if traffic else None
        started, since = time.monotonic(), utcnow()
        await board.submit_many(tasks)
        await _follow(board, wanted, say, since)
        seconds = time.monotonic() - started
        after = await traffic() if traffic else None
        final = {r.task.id: r for r in await board.all_tasks() if r.task.id in wanted}
        await _until_ledger_settles(board)
        ledgers = [entry for entry in await ledger.all() if entry.agent in ours]
    messages = after[0] - before[0] if before and after else None
    volume = after[1] - before[1] if before and after else None
    return DemoSummary(list(final.values()), seconds, ledgers, messages, volume)


async def _until_agents(board: TaskBoard, names: set[str], others: set[str], say: Say) -> set[str]:
    """The ids of the demo's agents (one named each of ``names``, none of ``others``) once all
    are up."""
    seen: set[str] = set()
    async with aclosing(board.directory.watch()) as changes:
        async for change in changes:
            card = change.card
            if change.kind == "joined" and card is not None and card.name in names and card.id not in others:
                seen.add(card.id)
                say(f"  agent up: {card.name:<13} can {','.join(sorted(card.capability_names))}")
            if len(seen) >= len(names):
                return seen
    raise AntsError("the directory's watch ended before the demo's agents were up")


_HOLDING_ENDS = ("task.completed", "task.failed", "task.released", "task.declined", "task.expired")


async def _follow(board: TaskBoard, wanted: set[str], say: Say, since: datetime) -> None:
    """Narrate the run from the trail alone: outcomes, troubles, and who is busy with what."""
    done: set[str] = set()
    load: Counter[str] = Counter()
    claims = 0
    every = max(len(wanted) // 5, 1)
    async with aclosing(board.trail.follow("ants.trail.>", since=since)) as events:
        async for event in events:
            if event.kind == "corrupt.forged":
                say(f"  ! forged event rejected: {event.ref}")
            if event.ref not in wanted:
                continue  # (not this demo's: other work on the same board)
            if event.kind == "task.claimed" and event.agent:
                claims += 1
                load[event.agent] += 1
            elif event.kind in _HOLDING_ENDS and event.agent:
                if isinstance(event.data, dict) and event.data.get("deferred") is True:
                    claims += 1  # a quick task's claim, never written: its outcome stands for it
                else:
                    load[event.agent] = max(load[event.agent] - 1, 0)
            if event.kind == "task.expired":
                say(f"  ! lease expired: {event.ref} abandoned by {event.agent}")
            elif event.kind == "task.failed" and not _terminal(event):
                say(f"  ! {event.ref} failed on {event.agent}; back on the board")
            if _terminal(event) and event.ref not in done:
                done.add(event.ref)
                bar = "#" * (30 * len(done) // len(wanted))
                outcome = event.kind.removeprefix("task.")
                say(f"  [{bar:<30}] {len(done):3d}/{len(wanted)} {outcome:<9} {event.ref}")
                if len(done) % every == 0:
                    busy = ", ".join(
                        f"{agent.rsplit('-', 1)[0]}={n}" for agent, n in sorted(load.items()) if n
                    )
                    say(f"    claims so far {claims}; busy now: {busy or 'nobody'}")
            if done >= wanted:
                return


async def _until_ledger_settles(board: TaskBoard) -> None:
    """Wait until the ledger has applied the trail's last accountable event (for the table)."""
    events = await board.trail.replay("ants.trail.task.>")
    last = max((e.seq or 0 for e in events if accountable(e)), default=0)
    applied = 0
    async with asyncio.timeout(10), aclosing(watch_values(jetstream(board.nc), LEDGER_BUCKET)) as values:
        async for _, value in values:
            entry = parse_or_none(AgentLedger, value, where=LEDGER_BUCKET)
            applied = max(applied, entry.last_seq if entry else 0)
            if applied >= last:
                return
