"""The second baseline: arq (from PyPI) on Debian's redis-server, a fresh server per measurement.

Needs ``apt-get install -y redis-server`` and ``pip install -e '.[bench]'``; ``missing()`` says what
is absent, so the benchmark can skip arq instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _results import Rate

from ants_nats.server import free_port

REDIS_SERVER = "/usr/bin/redis-server"
ENQUEUE_CHUNK = 200
POLL_DELAY_S = 0.001
"""arq's default (0.5 s) would cap it far below what it can do."""
READY_TIMEOUT_S = 30.0


def redis_binary() -> str | None:
    """The redis-server to use: Debian's, else one on PATH."""
    return REDIS_SERVER if shutil.which(REDIS_SERVER) else shutil.which("redis-server")


def missing() -> str | None:
    """Why arq cannot be measured here, with how to fix it; None when it can."""
    reasons = []
    if redis_binary() is None:
        reasons.append("redis-server not found (apt-get install -y redis-server)")
    if importlib.util.find_spec("arq") is None:
        reasons.append("arq not installed (.venv/bin/pip install -e '.[bench]')")
    return "; ".join(reasons) or None


def version() -> str:
    from arq.version import VERSION  # noqa: PLC0415 (optional dependency)

    return str(VERSION)


async def _ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await reader.readline()).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@asynccontextmanager
async def redis_server() -> AsyncIterator[int]:
    """A fresh, non-persistent redis-server on a free loopback port; yields the port."""
    binary = redis_binary()
    assert binary is not None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as scratch:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", scratch, "--daemonize", "no"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(10):
                while not await _ping(port):
                    if proc.returncode is not None:
                        raise RuntimeError(f"redis-server exited with {proc.returncode}")
                    await asyncio.sleep(0.02)
            yield port
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def noop(ctx: dict[str, Any]) -> None:
    """The job: nothing."""


async def throughput(max_jobs: int, tasks: int) -> Rate:
    """Enqueue ``tasks`` no-op jobs (in gathered chunks) while one worker with ``max_jobs`` runs them."""
    from arq import create_pool  # noqa: PLC0415 (optional dependency)
    from arq.connections import RedisSettings  # noqa: PLC0415
    from arq.worker import Worker  # noqa: PLC0415

    async with redis_server() as port:
        settings = RedisSettings(host="127.0.0.1", port=port)
        ready = asyncio.Event()
        done = asyncio.Event()
        finished = 0

        async def started(ctx: dict[str, Any]) -> None:
            ready.set()

        async def ended(ctx: dict[str, Any]) -> None:
            nonlocal finished
            finished += 1
            if finished >= tasks:
                done.set()

        worker = Worker(
            functions=[noop],
            redis_settings=settings,
            max_jobs=max_jobs,
            poll_delay=POLL_DELAY_S,
            handle_signals=False,
            on_startup=started,
            after_job_end=ended,
        )
        pool = await create_pool(settings)
        running = asyncio.create_task(worker.async_run())
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await ready.wait()

            async def enqueue() -> None:
                for start in range(0, tasks, ENQUEUE_CHUNK):
                    chunk = range(start, min(tasks, start + ENQUEUE_CHUNK))
                    await asyncio.gather(*(pool.enqueue_job("noop", _job_id=f"t{i:06d}") for i in chunk))

            started_at = time.perf_counter()
            async with asyncio.timeout(60 + tasks / 10):
                await asyncio.gather(enqueue(), done.wait())
            seconds = time.perf_counter() - started_at
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await worker.close()
            await pool.aclose()
    return Rate(tasks, seconds)
