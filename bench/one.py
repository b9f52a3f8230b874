"""Submit and wait for one task, as a caller that wants one answer does, one task at a time, with 4
idle agents (taskiq: its bench worker), measured in the same run, alternating; p50 of each round,
median of the rounds. Each figure runs from the call that submits to:

- ``run``: ``board.run(task)`` returned the result to the caller (it listens from before the
  submission, and hears the task's ending and its write through plain subscriptions);
- ``finished``: in the same ``run`` calls, the agent's handler returned, seen in the agent's
  process: the point taskiq's figure stops at (the result is not stored yet, nor sent anywhere);
- ``submit+wait``: ``submit`` then ``wait([id])`` returned (a watch opened per task);
- ``taskiq``: taskiq-nats' worker finished the task (its ``post_save`` hook, with no result
  backend), seen in the worker's process, which here is the caller's. Its result never travels: a
  taskiq caller that wants it needs a result backend and ``wait_result``, which polls the backend
  (every 0.2 s by default), so that figure is a floor for taskiq, not what its caller sees;
- ``taskiq+result``: what a taskiq caller sees: ``kiq()`` then ``wait_result`` returned, with
  taskiq-nats' result backend (``NATSObjectStoreResultBackend``) and a poll every millisecond
  (``check_interval=0.001``, 200 times more often than the default).

    .venv/bin/python bench/one.py --samples 200 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import time

import _taskiq
from _ants import KIND, _board, _swarm
from pydantic import JsonValue

from ants_nats import EmbeddedServer, Task, TaskContext

AGENTS = 4
POLL_S = 0.001
"""How often the taskiq caller asks its result backend whether the result is there."""


async def ants(samples: int, *, run: bool) -> dict[str, list[float]]:
    """Seconds from submitting to each point measured (see the module), one task at a time."""
    took: list[float] = []
    started: dict[str, float] = {}
    finished: dict[str, float] = {}

    async def noop(task: Task, ctx: TaskContext) -> JsonValue:
        finished[task.id] = time.perf_counter()
        return None

    async with _board() as (_, board), _swarm(board, AGENTS) as agents:
        for agent in agents:
            agent.handler(KIND)(noop)
        for i in range(samples):
            task = Task(id=f"one{i:05d}", kind=KIND, created_by="bench")
            begun = started[task.id] = time.perf_counter()
            if run:
                await board.run(task, timeout=10)
            else:
                await board.submit(task)
                await board.wait([task.id], timeout=10)
            took.append(time.perf_counter() - begun)
    return {"took": took, "finished": [finished[t] - started[t] for t in started]}


async def taskiq_result(samples: int) -> list[float]:
    """Seconds from ``kiq()`` to ``wait_result`` returning, one task at a time, with taskiq-nats'
    broker (its defaults, as ``_taskiq``) and result backend, the worker in this process."""
    from taskiq.api import run_receiver_task  # noqa: PLC0415 (optional dependency)
    from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker  # noqa: PLC0415

    async def noop() -> None:
        """The task: nothing."""

    took = []
    async with EmbeddedServer() as server:
        backend: NATSObjectStoreResultBackend[None] = NATSObjectStoreResultBackend(servers=server.url)
        broker = PullBasedJetStreamBroker(servers=server.url).with_result_backend(backend)
        task = broker.register_task(noop, task_name="noop")
        logging.getLogger("taskiq.receiver").setLevel(logging.ERROR)  # (it warns when cancelled)
        await broker.startup()
        receiving = asyncio.create_task(run_receiver_task(broker, max_async_tasks=AGENTS))
        try:
            for i in range(samples + 1):  # the first one warms up
                started = time.perf_counter()
                kicked = await task.kicker().with_task_id(f"r{i:05d}").kiq()
                await kicked.wait_result(check_interval=POLL_S, timeout=10)
                took.append(time.perf_counter() - started)
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
            await broker.shutdown()
    return took[1:]


async def main(samples: int, repeat: int) -> None:
    p50: dict[str, list[float]] = {
        "run": [],
        "finished": [],
        "submit+wait": [],
        "taskiq": [],
        "taskiq+result": [],
    }
    for round_ in range(repeat):
        ran = await ants(samples, run=True)
        p50["run"].append(statistics.median(ran["took"]))
        p50["finished"].append(statistics.median(ran["finished"]))
        p50["submit+wait"].append(statistics.median((await ants(samples, run=False))["took"]))
        latency, _ = await _taskiq.idle_latency(samples)
        p50["taskiq"].append(latency.p50 / 1000)  # (Latency gives milliseconds)
        p50["taskiq+result"].append(statistics.median(await taskiq_result(samples)))
        print(
            f"  round {round_ + 1}/{repeat}: "
            + ", ".join(f"{k} {v[-1] * 1000:.2f} ms" for k, v in p50.items())
        )
    taskiq = statistics.median(p50["taskiq"])
    print(f"\nsubmit and wait for one task, p50 (median of {repeat} rounds of {samples})")
    for name, values in p50.items():
        value = statistics.median(values)
        print(f"{name:<14} {value * 1000:7.2f} ms   {value / taskiq:5.2f} x taskiq")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    asyncio.run(main(opts.samples, opts.repeat))
