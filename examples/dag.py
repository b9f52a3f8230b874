"""A DAG worked by two kinds of agents: fetchers and summarisers.

Each page is fetched (capability ``net``), then summarised (capability ``llm``) once its fetch is
done; one ``report`` task waits on every summary. Two fetchers and one summariser share the work
with no coordinator: each task reaches only agents with the capability it requires, and becomes
claimable only when its dependencies are done. Without ``--server`` it starts its own embedded
nats-server.

    .venv/bin/python examples/dag.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

from _run import run  # examples/_run.py: --server, else an embedded server
from pydantic import JsonValue

from ants_nats import Agent, Task, TaskBoard, TaskContext, TaskStatus

PAGES = ("ants", "bees", "termites")
done_by: Counter[str] = Counter()


async def fetch(task: Task, ctx: TaskContext) -> JsonValue:
    done_by[ctx.lease.agent_id] += 1
    await asyncio.sleep(0.05)  # the network
    return f"The {task.payload} page: {task.payload} live in colonies and divide their work."


async def summarise(task: Task, ctx: TaskContext) -> JsonValue:
    done_by[ctx.lease.agent_id] += 1
    (page,) = (await ctx.dependency_results()).values()  # the fetch it depends on
    return " ".join(str(page).split()[:3]) + " ..."


async def report(task: Task, ctx: TaskContext) -> JsonValue:
    done_by[ctx.lease.agent_id] += 1
    summaries = await ctx.dependency_results()
    return "\n".join(f"{key}: {value}" for key, value in sorted(summaries.items()))


def pipeline() -> list[Task]:
    tasks: list[Task] = []
    for page in PAGES:
        tasks.append(Task(id=f"fetch-{page}", kind="fetch", requires=("net",), payload=page))
        tasks.append(
            Task(id=f"summarise-{page}", kind="summarise", requires=("llm",), depends_on=(f"fetch-{page}",))
        )
    summaries = tuple(f"summarise-{page}" for page in PAGES)
    tasks.append(Task(id="report", kind="report", requires=("llm",), depends_on=summaries))
    return tasks


async def main(url: str) -> int:
    async with TaskBoard.connect(url) as board:
        fetchers = [Agent(board, name=f"fetcher-{i}", capabilities=["net"], capacity=2) for i in (1, 2)]
        for fetcher in fetchers:
            fetcher.handler("fetch")(fetch)
        summariser = Agent(board, name="summariser", capabilities=["llm"], capacity=2)
        summariser.handler("summarise")(summarise)
        summariser.handler("report")(report)
        tasks = pipeline()
        async with AsyncExitStack() as agents:
            for agent in (*fetchers, summariser):
                await agents.enter_async_context(agent)
            await board.submit_many(tasks)  # the whole DAG at once; order is the dependencies' business
            final = await board.wait([t.id for t in tasks], timeout=30)
        for task in tasks:
            record = final[task.id]
            print(f"{task.id:<20} {record.status.value:<5} by {record.attempts[-1].agent}")
        print("work per agent:", ", ".join(f"{a.rsplit('-', 1)[0]}={n}" for a, n in sorted(done_by.items())))
        print("report:")
        print(await board.result("report"))
        done = sum(r.status == TaskStatus.DONE for r in final.values())
        print(f"done {done}/{len(tasks)}")
        return 0 if done == len(tasks) else 1


if __name__ == "__main__":
    run(main, __doc__)
