"""The cost of distance: one agent working a board on the hub, beside it (connected to the hub)
and far from it (connected to its site's leaf node, whose link to the hub adds ``--delay`` seconds
each way through a TCP proxy), measured in the same run.

For tasks done one at a time, it reports the time from submission to the handler starting (the
claim: the ticket's delivery and the claim's CAS) and from the handler's return to the result
being readable (the completion), and the messages on the agent's own connection per task. The
extra time far away, divided by the link's round trip, is the number of round trips each step
waits for.

    .venv/bin/python bench/distance.py --delay 0.025 --tasks 40
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import Traffic, traffic_by_name
from pydantic import JsonValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the loopback network

from ants_nats import Agent, EmbeddedServer, Task, TaskBoard, TaskContext
from tests.network import HUB, hub_and_sites

AGENT_CONNECTION = "distance-agent"


async def _messages(server: EmbeddedServer) -> int:
    """Messages in and out of the agent's connection so far."""
    return (await traffic_by_name(server.monitor_port)).get(AGENT_CONNECTION, Traffic(0, 0)).msgs


async def one_side(far: bool, delay: float, tasks: int) -> tuple[list[float], list[float], float]:
    """(claim times, completion times, messages per task) of one agent, near or far."""
    with tempfile.TemporaryDirectory() as tmp:
        async with hub_and_sites(Path(tmp), delay=delay) as (hub, site_a, _, _):
            server = site_a if far else hub
            domain = HUB if far else None
            started: dict[str, float] = {}
            returned: dict[str, float] = {}

            async def work(task: Task, ctx: TaskContext) -> JsonValue:
                started[task.id] = time.perf_counter()
                returned[task.id] = time.perf_counter()
                return None

            async with (
                TaskBoard.connect(hub.url, name="distance-submitter") as submitter,
                TaskBoard.connect(server.url, name=AGENT_CONNECTION, js_domain=domain) as at_agent,
            ):
                agent = Agent(at_agent, name="far" if far else "near", capabilities=["work"])
                agent.handler("work")(work)
                async with agent:
                    await submitter.submit(Task(id="warm", kind="work", requires=("work",)))
                    await submitter.result("warm", timeout=30)
                    before = await _messages(server)
                    claims, completions = [], []
                    for i in range(tasks):
                        task_id = f"t{i}"
                        submitted = time.perf_counter()
                        await submitter.submit(Task(id=task_id, kind="work", requires=("work",)))
                        await submitter.result(task_id, timeout=30)
                        done = time.perf_counter()
                        claims.append(started[task_id] - submitted)
                        completions.append(done - returned[task_id])
                    per_task = (await _messages(server) - before) / tasks
    return claims, completions, per_task


async def main(delay: float, tasks: int) -> None:
    near = await one_side(False, delay, tasks)
    far = await one_side(True, delay, tasks)
    rtt = 2 * delay
    print(f"\none agent, {tasks} no-op tasks one at a time; the far link adds {delay * 1000:.0f} ms each way")
    print(f"{'':<26} {'beside the hub':>15} {'at a site':>10} {'extra':>8} {'round trips':>12}")
    for name, index in (("submit -> handler starts", 0), ("handler ends -> result", 1)):
        a, b = statistics.median(near[index]), statistics.median(far[index])
        extra = b - a
        times = f"{a * 1000:>12.1f} ms {b * 1000:>7.1f} ms {extra * 1000:>5.1f} ms"
        print(f"{name:<26} {times} {extra / rtt:>12.1f}")
    print(f"{'messages on its connection':<26} {near[2]:>15.1f} {far[2]:>10.1f}   per task")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added each way on the far link")
    parser.add_argument("--tasks", type=int, default=40)
    opts = parser.parse_args()
    asyncio.run(main(opts.delay, opts.tasks))
