"""The baseline: a bare JetStream work queue with nats-py, each measurement on a fresh embedded server.

One connection (like the agents of one process), a work-queue stream on file storage (like the
board's work stream), a durable pull consumer with explicit acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import nats.errors
from _results import Latency, Rate, Traffic, traffic
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from ants_nats import EmbeddedServer

STREAM = "BENCH"
SUBJECT = "bench.work"
DURABLE = "workers"
IN_FLIGHT = 256
"""Publishes awaiting their ack at once."""
BATCH = 256
"""Messages asked for by one fetch."""


def _payload(i: int) -> bytes:
    # About the size of an ants-nats ticket.
    return b'{"task_id":"t%06d","route":""}' % i


@asynccontextmanager
async def _queue() -> AsyncIterator[tuple[EmbeddedServer, Client, JetStreamContext]]:
    async with EmbeddedServer() as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=STREAM,
                    subjects=[SUBJECT],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                )
            )
            yield server, nc, js
        finally:
            await nc.close()


async def _consumer(js: JetStreamContext) -> JetStreamContext.PullSubscription:
    return await js.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)


async def _publish_all(js: JetStreamContext, count: int) -> None:
    room = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with room:
            await js.publish(SUBJECT, _payload(i))

    await asyncio.gather(*(one(i) for i in range(count)))


async def throughput(tasks: int) -> Rate:
    """Publish ``tasks`` messages (``IN_FLIGHT`` acks pending) while one consumer fetches and acks them."""
    async with _queue() as (server, _, js):
        sub = await _consumer(js)

        async def consume() -> None:
            received = 0
            while received < tasks:
                try:
                    msgs = await sub.fetch(BATCH, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await msg.ack()
                received += len(msgs)

        before = await traffic(server.monitor_port)
        started = time.perf_counter()
        async with asyncio.timeout(60 + tasks / 100):
            await asyncio.gather(consume(), _publish_all(js, tasks))
        seconds = time.perf_counter() - started
        after = await traffic(server.monitor_port)
    return Rate(tasks, seconds, after - before)


async def publish_rate(tasks: int) -> Rate:
    """``js.publish`` of ``tasks`` messages, ``IN_FLIGHT`` acks pending, nobody consuming."""
    async with _queue() as (server, _, js):
        before = await traffic(server.monitor_port)
        started = time.perf_counter()
        await _publish_all(js, tasks)
        seconds = time.perf_counter() - started
        after = await traffic(server.monitor_port)
    return Rate(tasks, seconds, after - before)


async def publish_latency(samples: int) -> Latency:
    """One ``js.publish`` (until its ack), ``samples`` times in sequence."""
    found = []
    async with _queue() as (_, _, js):
        await js.publish(SUBJECT, _payload(0))
        for i in range(samples):
            started = time.perf_counter()
            await js.publish(SUBJECT, _payload(i))
            found.append(time.perf_counter() - started)
    return Latency(tuple(found))


async def idle_latency(samples: int) -> tuple[Latency, Traffic]:
    """Publish -> receipt by an idle consumer waiting in ``fetch(1)``, one message at a time."""
    found: list[float] = []
    arrived: asyncio.Queue[float] = asyncio.Queue()
    async with _queue() as (server, _, js):
        sub = await _consumer(js)

        async def consume() -> None:
            while True:
                try:
                    msgs = await sub.fetch(1, timeout=2.0)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    arrived.put_nowait(time.perf_counter())
                    await msg.ack()

        consumer = asyncio.create_task(consume())
        try:
            await js.publish(SUBJECT, _payload(0))
            await arrived.get()
            await asyncio.sleep(0.1)
            before = await traffic(server.monitor_port)
            for i in range(samples):
                started = time.perf_counter()
                await js.publish(SUBJECT, _payload(i))
                async with asyncio.timeout(10):
                    found.append(await arrived.get() - started)
            after = await traffic(server.monitor_port)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    return Latency(tuple(found)), after - before


async def calibration(count: int = 200) -> dict[str, float]:
    """What single operations cost in ``/varz`` messages (in + out), per operation."""
    async with _queue() as (server, nc, js):
        costs: dict[str, float] = {}
        before = await traffic(server.monitor_port)
        await asyncio.sleep(0.5)
        costs["idle_half_second"] = (await traffic(server.monitor_port) - before).msgs
        before = await traffic(server.monitor_port)
        for i in range(count):
            await js.publish(SUBJECT, _payload(i))
        costs["js_publish_with_ack"] = (await traffic(server.monitor_port) - before).msgs / count
        before = await traffic(server.monitor_port)
        for i in range(count):
            await nc.publish(SUBJECT, _payload(i))
        await nc.flush()
        await asyncio.sleep(0.1)
        costs["core_publish_into_stream"] = (await traffic(server.monitor_port) - before).msgs / count
        stored = (await js.stream_info(STREAM)).state.messages
        costs["stored_after_both"] = stored
        sub = await _consumer(js)
        before = await traffic(server.monitor_port)
        taken = 0
        while taken < stored:
            for msg in await sub.fetch(1, timeout=2.0):
                await msg.ack()
                taken += 1
        await nc.flush()
        costs["fetch1_deliver_ack"] = (await traffic(server.monitor_port) - before).msgs / stored
        before = await traffic(server.monitor_port)
        await nc.flush()
        costs["flush_ping"] = (await traffic(server.monitor_port) - before).msgs
    return costs
