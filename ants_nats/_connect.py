"""Opening a NATS connection with the options a long-running agent needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats.errors
from nats.aio.client import Client

from .errors import ServerUnavailable
from .log import get_logger

log = get_logger("connection")


@asynccontextmanager
async def connect(
    url: str, *, name: str = "ants-nats", connect_timeout: float = 2.0
) -> AsyncIterator[Client]:
    """Connect to ``url`` (comma-separated for a cluster), reconnecting forever once connected;
    drains on exit. Raises ``ServerUnavailable`` when no server answers at first."""

    async def on_error(exc: Exception) -> None:
        log.debug("nats.error", error=str(exc) or type(exc).__name__)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats.disconnected", url=url)

    async def on_reconnected() -> None:
        log.info("nats.reconnected", url=str(nc.connected_url.geturl()) if nc.connected_url else url)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    nc = Client()
    try:
        # With reconnects on, nats-py would retry an unreachable first server forever: bound it.
        async with asyncio.timeout(connect_timeout * len(servers) + 0.5):
            await nc.connect(
                servers=servers,
                name=name,
                # nats-py annotates these as int but takes seconds as float.
                connect_timeout=connect_timeout,  # type: ignore[arg-type]
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        await nc.close()
        reason = str(exc) or "no answer"
        raise ServerUnavailable(f"cannot connect to NATS at {url}: {reason}") from exc
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except (nats.errors.Error, TimeoutError):
                await nc.close()
