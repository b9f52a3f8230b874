"""A baseline: taskiq with taskiq-nats's ``PullBasedJetStreamBroker``, each measurement on a fresh server.

The broker keeps its defaults (a limits stream ``taskiq_jetstream`` on file storage, one durable pull
consumer fetching one message at a time, no result backend: ``DummyResultBackend``). The worker runs
in this process and loop, as ``run_receiver_task`` (taskiq's programmatic worker) with
``max_async_tasks`` = the number of agents, sharing the broker's connection with the kicks, like the
agents of ants-nats share the board's. A task is done when the worker's ``post_save`` hook fires (its
result stored, just before the ack), which is also the end of ``submit -> result`` for the idle latency.

``missing()`` says when taskiq or taskiq-nats is absent, so the benchmark can skip it instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version as _dist_version
from typing import Any

import _drive
from _results import Latency, Rate, Traffic

from ants_nats import EmbeddedServer

READY_TIMEOUT_S = 30.0
SETTLE_S = 0.2
WARMUP = "warmup"


def missing() -> str | None:
    """Why taskiq cannot be measured here, with how to fix it; None when it can."""
    absent = [name for name in ("taskiq", "taskiq_nats") if importlib.util.find_spec(name) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (.venv/bin/pip install -e '.[bench]')"
    return None


def version() -> str:
    return f"{_dist_version('taskiq')} (taskiq-nats {_dist_version('taskiq-nats')})"


async def _noop() -> None:
    """The task: nothing."""


@asynccontextmanager
async def _worker(
    server: EmbeddedServer, max_async_tasks: int, on_done: Callable[[str], None]
) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """A started broker with its receiver running; yields ``kick(task_id)`` of the no-op task.

    ``on_done`` is called with the id of every task the worker finishes after the warm-up task, which
    has run when this yields.
    """
    from taskiq import TaskiqMiddleware  # noqa: PLC0415 (optional dependency)
    from taskiq.api import run_receiver_task  # noqa: PLC0415
    from taskiq_nats import PullBasedJetStreamBroker  # noqa: PLC0415

    warmed = asyncio.Event()

    class Done(TaskiqMiddleware):
        def post_save(self, message: Any, result: Any) -> None:
            if message.task_id == WARMUP:
                warmed.set()
            else:
                on_done(message.task_id)

    broker = PullBasedJetStreamBroker(servers=server.url).with_middlewares(Done())
    task = broker.register_task(_noop, task_name="noop")

    def kick(task_id: str) -> Awaitable[Any]:
        return task.kicker().with_task_id(task_id).kiq()

    # run_receiver_task warns when cancelled, which is how this worker stops.
    logging.getLogger("taskiq.receiver").setLevel(logging.ERROR)
    await broker.startup()
    receiving = asyncio.create_task(run_receiver_task(broker, max_async_tasks=max_async_tasks))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await kick(WARMUP)
            await warmed.wait()
        await asyncio.sleep(SETTLE_S)
        yield kick
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        await broker.shutdown()


async def throughput(max_async_tasks: int, tasks: int) -> Rate:
    """``tasks`` no-op tasks submitted in gathered chunks while one worker (max_async_tasks) runs them."""
    return await _drive.throughput(_worker, max_async_tasks, tasks)


async def idle_latency(samples: int) -> tuple[Latency, Traffic]:
    """Submit -> finished of one task at a time, the worker waiting idle in between."""
    return await _drive.idle_latency(_worker, samples)
