"""A realistic swarm's coordination tax, per role: a fetch -> parse -> summarise pipeline per
document (two agents per step, each with its own connection, as separate processes would have),
the ledger service projecting the trail into reputation (with signature checks, as
``ants-ledger`` runs), one trail follower reading every event (as a reacting service does), and
a submitter. Messages and bytes through the server per task, in total (``/varz``) and per role
(each connection's own counters in ``/connz``), until the ledger has counted every completion.

    .venv/bin/python bench/swarm.py --documents 100 [--wait records]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AsyncExitStack, aclosing

from _results import Traffic, traffic, traffic_by_name
from pydantic import JsonValue

from ants_nats import (
    Agent,
    Directory,
    EmbeddedServer,
    Task,
    TaskBoard,
    TaskContext,
    Trail,
    Verifier,
    connect,
    jetstream,
)
from ants_nats.ledger import Ledger
from ants_nats.names import TRAIL_STREAM

STEPS = (("fetch", "net"), ("parse", "parse"), ("summarise", "llm"))
AGENTS_PER_STEP = 2


async def _work(task: Task, ctx: TaskContext) -> JsonValue:
    return {"step": task.kind, "doc": task.id.split("-")[0]}


def _pipeline(documents: int) -> list[Task]:
    tasks = []
    for d in range(documents):
        before: tuple[str, ...] = ()
        for kind, capability in STEPS:
            task_id = f"d{d:04d}-{kind}"
            tasks.append(
                Task(id=task_id, kind=kind, requires=(capability,), depends_on=before, payload={"d": d})
            )
            before = (task_id,)
    return tasks


async def _by_role(monitor_port: int) -> dict[str, Traffic]:
    """Messages and bytes of each role's connections (a connection is named ``role:detail``)."""
    return await traffic_by_name(monitor_port, lambda name: name.split(":")[0])


async def _submit_and_wait(submitter: TaskBoard, tasks: list[Task], wait: str) -> None:
    """Submit ``tasks`` and wait until all have ended: hearing their endings (``endings``, listening
    from before the submission) or watching their records (``records``: ``TaskBoard.wait``)."""
    if wait == "records":
        await submitter.submit_many(tasks)
        await submitter.wait([t.id for t in tasks], timeout=120)
        return
    async with submitter.endings(tasks) as endings:
        records = await submitter.submit_many(tasks)
        await endings.wait(120, known=records)


async def main(documents: int, wait: str = "endings") -> None:
    tasks = _pipeline(documents)
    async with EmbeddedServer() as server, AsyncExitStack() as stack:
        submitter = await stack.enter_async_context(TaskBoard.connect(server.url, name="submitter"))
        for kind, capability in STEPS:
            for i in range(AGENTS_PER_STEP):
                board = await stack.enter_async_context(
                    TaskBoard.connect(server.url, name=f"agents:{kind}{i}")
                )
                agent = Agent(board, name=f"{kind}{i}", capabilities=[capability])
                agent.handler(kind)(_work)
                await stack.enter_async_context(agent)
        ledger_nc = await stack.enter_async_context(connect(server.url, name="ledger"))
        ledger = Ledger(ledger_nc)
        follower_nc = await stack.enter_async_context(connect(server.url, name="follower"))
        # The bench's own watch of the ledger, on a connection no role is charged for.
        probe_nc = await stack.enter_async_context(connect(server.url, name="probe"))
        counted, followed = asyncio.Event(), asyncio.Event()
        total = len(tasks)

        async def project() -> None:
            await ledger.project(await Trail.open(ledger_nc), verifier=Verifier(Directory(ledger_nc)))

        async def until_counted() -> None:
            async with aclosing(Ledger(probe_nc).watch()) as changes:
                done: dict[str, int] = {}
                async for agent, entry in changes:
                    done[agent] = entry.totals.completed if entry else 0
                    if sum(done.values()) >= total:
                        counted.set()
                        return

        async def follow() -> None:
            seen = 0
            async for event in (await Trail.open(follower_nc)).follow("ants.trail.>", new_only=True):
                seen += event.kind == "task.completed"
                if seen >= total:
                    followed.set()

        background = [asyncio.create_task(c) for c in (project(), until_counted(), follow())]
        try:
            before, roles_before = await traffic(server.monitor_port), await _by_role(server.monitor_port)
            started = time.perf_counter()
            await _submit_and_wait(submitter, tasks, wait)
            took = time.perf_counter() - started
            async with asyncio.timeout(120):
                await counted.wait()
                await followed.wait()
            spent = await traffic(server.monitor_port) - before
            roles = await _by_role(server.monitor_port)
            events = (await jetstream(probe_nc).stream_info(TRAIL_STREAM)).state.messages
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    print(
        f"\n{documents} documents, {total} tasks, {len(STEPS) * AGENTS_PER_STEP} agents: done in {took:.1f} s"
    )
    print(f"{'role':<10} {'msgs/task':>10} {'KiB/task':>9}")
    for role in ("submitter", "agents", "ledger", "follower"):
        spent_here = roles.get(role, Traffic(0, 0)) - roles_before.get(role, Traffic(0, 0))
        msgs, size = spent_here.msgs, spent_here.bytes
        print(f"{role:<10} {msgs / total:>10.1f} {size / total / 1024:>9.2f}")
    print(
        f"{'server':<10} {spent.msgs / total:>10.1f} {spent.bytes / total / 1024:>9.2f}   (/varz: in + out)"
    )
    print(f"(the trail holds {events / total:.1f} events a task; the follower reads every one)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument(
        "--wait",
        choices=("endings", "records"),
        default="endings",
        help="how the submitter waits: hearing endings (board.endings) or watching records (board.wait)",
    )
    opts = parser.parse_args()
    asyncio.run(main(opts.documents, opts.wait))
