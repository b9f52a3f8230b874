"""Driving a task queue the same way for every NATS-based baseline (taskiq, FastStream): submit
in gathered chunks while one worker runs no-op tasks, or one task at a time with the worker idle.

A baseline provides a ``Queue``: an async context manager that, given the server, the worker's
concurrency and a callback for every finished task id, starts its worker and yields the coroutine
function that submits one task by id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from _results import Latency, Rate, Traffic, traffic

from ants_nats import EmbeddedServer

Submit = Callable[[str], Awaitable[Any]]
Queue = Callable[[EmbeddedServer, int, Callable[[str], None]], AbstractAsyncContextManager[Submit]]

SUBMIT_CHUNK = 200
"""Submissions gathered at once (each awaiting its JetStream ack), as arq's enqueues."""
IDLE_WORKERS = 16
"""The worker's concurrency while it waits idle for the latency samples."""
SETTLE_S = 0.2
"""Wait after the last task before reading the counters: the last acks follow the handler."""


async def throughput(queue: Queue, concurrency: int, tasks: int) -> Rate:
    """Submit ``tasks`` no-op tasks (in gathered chunks) while one worker (``concurrency``) runs them."""
    done = asyncio.Event()
    finished = 0

    def on_done(task_id: str) -> None:
        nonlocal finished
        finished += 1
        if finished >= tasks:
            done.set()

    async with EmbeddedServer() as server, queue(server, concurrency, on_done) as submit:

        async def submit_all() -> None:
            for start in range(0, tasks, SUBMIT_CHUNK):
                chunk = range(start, min(tasks, start + SUBMIT_CHUNK))
                await asyncio.gather(*(submit(f"t{i:06d}") for i in chunk))

        before = await traffic(server.monitor_port)
        started = time.perf_counter()
        async with asyncio.timeout(60 + tasks / 10):
            await asyncio.gather(submit_all(), done.wait())
        seconds = time.perf_counter() - started
        await asyncio.sleep(SETTLE_S)
        after = await traffic(server.monitor_port)
    return Rate(tasks, seconds, after - before)


async def idle_latency(queue: Queue, samples: int) -> tuple[Latency, Traffic]:
    """Submit -> finished, one task at a time, the worker waiting idle in between."""
    pending: dict[str, asyncio.Future[float]] = {}
    found: list[float] = []

    def on_done(task_id: str) -> None:
        future = pending.get(task_id)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    async with EmbeddedServer() as server, queue(server, IDLE_WORKERS, on_done) as submit:
        loop = asyncio.get_running_loop()
        before = await traffic(server.monitor_port)
        for i in range(samples):
            task_id = f"l{i:06d}"
            done = pending[task_id] = loop.create_future()
            started = time.perf_counter()
            await submit(task_id)
            async with asyncio.timeout(10):
                found.append(await done - started)
        after = await traffic(server.monitor_port)
    return Latency(tuple(found)), after - before
