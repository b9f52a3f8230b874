"""The coordination tax: what it costs, per task, for N agents to divide work, as N grows.

For each swarm size it runs the same batch of no-op tasks on a fresh embedded server and reports,
per task: messages and bytes through the server (from its /varz counters), claim attempts, and
wall time. Ratios are against the single-agent run measured in the same invocation, so the figures
compare like with like on whatever machine runs this.

    .venv/bin/python bench/coordination_tax.py [--tasks 200] [--agents 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    EmbeddedServer,
    Task,
    TaskBoard,
    TaskContext,
    configure_logging,
)
from ants_nats.server import monitor_json


@dataclass(frozen=True)
class Run:
    agents: int
    messages: float
    kib: float
    claims: float
    seconds: float


async def _noop(task: Task, ctx: TaskContext) -> JsonValue:
    return None


async def measure(agents: int, tasks: int) -> Run:
    async with (
        EmbeddedServer() as server,
        TaskBoard.connect(server.url, BoardConfig(lease_ttl=10.0)) as board,
    ):
        swarm = [Agent(board, name=f"a{i}", capacity=4) for i in range(agents)]
        for agent in swarm:
            agent.handler("noop")(_noop)
            await agent.__aenter__()
        try:
            before = await monitor_json(server.monitor_port, "/varz")
            started = time.perf_counter()
            batch = [Task(id=f"t{i:05d}", kind="noop") for i in range(tasks)]
            await board.submit_many(batch)
            await board.wait([t.id for t in batch], timeout=600)
            seconds = time.perf_counter() - started
            after = await monitor_json(server.monitor_port, "/varz")
            # Every accepted claim is an attempt on the task's record.
            claims = sum(len(record.attempts) for record in await board.all_tasks())
        finally:
            for agent in swarm:
                await agent.__aexit__(None, None, None)
    messages = (after["in_msgs"] + after["out_msgs"]) - (before["in_msgs"] + before["out_msgs"])
    volume = (after["in_bytes"] + after["out_bytes"]) - (before["in_bytes"] + before["out_bytes"])
    return Run(agents, messages / tasks, volume / tasks / 1024, claims / tasks, seconds / tasks)


async def main(tasks: int, sizes: list[int]) -> None:
    runs = [await measure(n, tasks) for n in sizes]
    base = runs[0]
    print(f"{tasks} tasks per run; ratios against the {base.agents}-agent run of this invocation\n")
    columns = ("agents", "msgs/task", "ratio", "KiB/task", "ratio", "claims/task", "ms/task")
    widths = (6, 10, 6, 9, 6, 12, 8)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for run in runs:
        print(
            f"{run.agents:>6} {run.messages:>10.1f} {run.messages / base.messages:>6.2f} "
            f"{run.kib:>9.2f} {run.kib / base.kib:>6.2f} {run.claims:>12.2f} {run.seconds * 1000:>8.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    configure_logging(level="WARNING")
    asyncio.run(main(args.tasks, args.agents))
