"""A real agent process that claims work, prints ``<task id> <token>`` per claim, and never finishes.

The test SIGKILLs it: nothing is released, so its leases must expire on the server by themselves.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import JsonValue

from ants_nats import Agent, BoardConfig, Task, TaskBoard, TaskContext, configure_logging


async def main(url: str, ttl: float) -> None:
    async def hang(task: Task, ctx: TaskContext) -> JsonValue:
        print(task.id, await ctx.confirm(), flush=True)  # the claim is on the record before we die
        await asyncio.Event().wait()
        return None

    async with TaskBoard.connect(url, BoardConfig(lease_ttl=ttl)) as board:
        agent = Agent(board, name="killed", capacity=10)
        agent.handler("work")(hang)
        async with agent:
            await agent.run()


if __name__ == "__main__":
    configure_logging()  # logs to stderr: stdout carries the claims the test reads
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
