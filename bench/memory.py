"""The server's resident memory as finished tasks pile up on a board (issue "Faults without
noise", point 7): RSS from ``/varz`` (``mem``) after every ``--step`` tasks, with the messages the
streams hold, on a board with finished records kept ``finished_ttl`` (the default: rolled up to
one revision) and on one keeping them forever (``finished_ttl=None``: every revision kept).

    .venv/bin/python bench/memory.py --tasks 20000 --step 5000
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack

from pydantic import JsonValue

from ants_nats import Agent, BoardConfig, EmbeddedServer, Task, TaskBoard, TaskContext
from ants_nats.server import monitor_json

CHUNK = 500
AGENTS = 8


async def _noop(task: Task, ctx: TaskContext) -> JsonValue:
    return None


async def measure(tasks: int, step: int, finished_ttl: float | None) -> list[tuple[int, float, int, int]]:
    """(finished tasks, server RSS MiB, messages in KV_ants_tasks, messages in ANTS_TRAIL) per step."""
    rows = []
    config = BoardConfig(lease_ttl=10.0, finished_ttl=finished_ttl)
    async with (
        EmbeddedServer() as server,
        TaskBoard.connect(server.url, config) as board,
        AsyncExitStack() as stack,
    ):
        for i in range(AGENTS):
            agent = Agent(board, name=f"m{i}", capacity=4)
            agent.handler("noop")(_noop)
            await stack.enter_async_context(agent)

        async def sample(done: int) -> None:
            varz = await monitor_json(server.monitor_port, "/varz")
            js = board.nc.jetstream()
            kept = (await js.stream_info("KV_ants_tasks")).state.messages
            trail = (await js.stream_info("ANTS_TRAIL")).state.messages
            rows.append((done, int(varz["mem"]) / 2**20, kept, trail))
            print(f"  finished_ttl={finished_ttl}: {done:>7,} tasks  RSS {rows[-1][1]:7.1f} MiB", flush=True)

        await sample(0)
        for start in range(0, tasks, step):
            ids = []
            for chunk in range(start, min(start + step, tasks), CHUNK):
                batch = [Task(id=f"t{i:07d}", kind="noop") for i in range(chunk, min(chunk + CHUNK, tasks))]
                await board.submit_many(batch)
                ids += [t.id for t in batch]
            await board.wait(ids, timeout=600)
            await sample(min(start + step, tasks))
    return rows


async def main(tasks: int, step: int) -> None:
    for ttl in (7 * 24 * 3600.0, None):
        rows = await measure(tasks, step, ttl)
        (n0, m0, _, _), (n1, m1, kept, trail) = rows[0], rows[-1]
        per_task = (m1 - m0) * 1024 / (n1 - n0)
        print(
            f"finished_ttl={ttl}: {m0:.1f} MiB empty, {m1:.1f} MiB with {n1:,} finished tasks: "
            f"{per_task:.2f} KiB a task (KV_ants_tasks holds {kept:,} messages, ANTS_TRAIL {trail:,})\n"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--step", type=int, default=5_000)
    opts = parser.parse_args()
    asyncio.run(main(opts.tasks, opts.step))
