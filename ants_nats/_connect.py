"""Opening a NATS connection with the options a long-running agent needs."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

import nats.errors
from nats.aio.client import Client

from .errors import PermissionDenied, ServerUnavailable
from .log import get_logger

log = get_logger("connection")

_DENIAL_MEMORY_S = 30.0
_denials: WeakKeyDictionary[Client, deque[tuple[float, str]]] = WeakKeyDictionary()


def denied(nc: Client, subject: str) -> bool:
    """True when the server recently refused this connection a publish to ``subject``.

    The server reports a permissions violation asynchronously (``-ERR``), while the refused
    request simply times out; this links the two so callers get a precise error.
    """
    now = time.monotonic()
    needle = f'publish to "{subject.lower()}"'
    return any(now - at < _DENIAL_MEMORY_S and needle in text for at, text in _denials.get(nc, ()))


@asynccontextmanager
async def connect(
    url: str, *, name: str = "ants-nats", connect_timeout: float = 2.0, seed: str | None = None
) -> AsyncIterator[Client]:
    """Connect to ``url`` (comma-separated for a cluster), reconnecting forever once connected;
    drains on exit. ``seed`` authenticates with an nkeys user seed (``SU...``).

    Raises ``ServerUnavailable`` when no server answers at first, ``PermissionDenied`` when the
    server rejects the credentials."""

    rejected: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text.lower():
            rejected.append(exc)
        if "permissions violation" in text:
            _denials.setdefault(nc, deque(maxlen=64)).append((time.monotonic(), text))
            log.error("nats.permission_denied", error=text)
        else:
            log.debug("nats.error", error=text)

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
                nkeys_seed_str=seed,
            )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        # With reconnects on, a rejected login surfaces as a timeout: the cause is the last error.
        if isinstance(exc, nats.errors.AuthorizationError) or rejected:
            await nc.close()
            raise PermissionDenied(f"NATS at {url} rejected the credentials") from exc
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
