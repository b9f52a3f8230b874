"""A baseline: FastStream's ``NatsBroker`` on a JetStream pull subscription, each on a fresh server.

One subscriber on a ``JStream`` (FastStream's defaults: a limits stream on file storage) with
``PullSub(batch_size=64, timeout=1.0)``, a durable consumer and ``max_workers`` = the number of agents;
the handler does nothing and FastStream acks it when it returns. The broker runs in this process and
loop and publishes through the same connection (``broker.publish(..., stream=...)``: a ``js.publish``
awaiting its ack), like the agents of ants-nats share the board's. The access log is off
(``logger=None``): it would write two lines per message. A task is done when its handler has run,
which is also the end of ``submit -> result`` for the idle latency.

``missing()`` says when FastStream is absent, so the benchmark can skip it instead of failing.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version as _dist_version
from typing import Any

import _drive
from _results import Latency, Rate, Traffic

from ants_nats import EmbeddedServer

STREAM = "BENCH_FS"
SUBJECT = "bench.fs"
DURABLE = "workers"
BATCH_SIZE = 64
FETCH_TIMEOUT_S = 1.0
READY_TIMEOUT_S = 30.0
SETTLE_S = 0.2
WARMUP = "warmup"


def missing() -> str | None:
    """Why FastStream cannot be measured here, with how to fix it; None when it can."""
    if importlib.util.find_spec("faststream") is None:
        return "faststream not installed (.venv/bin/pip install -e '.[bench]')"
    return None


def version() -> str:
    return _dist_version("faststream")


@asynccontextmanager
async def _broker(
    server: EmbeddedServer, max_workers: int, on_done: Callable[[str], None]
) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """A started broker with its subscriber consuming; yields ``publish(task_id)``.

    ``on_done`` is called with the id of every task handled after the warm-up one, which has been
    handled when this yields.
    """
    from faststream.nats import JStream, NatsBroker, PullSub  # noqa: PLC0415 (optional dependency)

    warmed = asyncio.Event()
    broker = NatsBroker(server.url, logger=None)

    @broker.subscriber(
        SUBJECT,
        stream=JStream(STREAM),
        durable=DURABLE,
        pull_sub=PullSub(batch_size=BATCH_SIZE, timeout=FETCH_TIMEOUT_S),
        max_workers=max_workers,
    )
    async def noop(body: dict[str, str]) -> None:
        if body["task_id"] == WARMUP:
            warmed.set()
        else:
            on_done(body["task_id"])

    def publish(task_id: str) -> Awaitable[Any]:
        return broker.publish({"task_id": task_id}, SUBJECT, stream=STREAM)

    await broker.start()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await publish(WARMUP)
            await warmed.wait()
        await asyncio.sleep(SETTLE_S)
        yield publish
    finally:
        await broker.stop()


async def throughput(max_workers: int, tasks: int) -> Rate:
    """``tasks`` no-op tasks submitted in gathered chunks while one worker (max_workers) runs them."""
    return await _drive.throughput(_broker, max_workers, tasks)


async def idle_latency(samples: int) -> tuple[Latency, Traffic]:
    """Submit -> finished of one task at a time, the worker waiting idle in between."""
    return await _drive.idle_latency(_broker, samples)
