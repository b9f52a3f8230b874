"""Plain subscriptions a reader holds for a while (a wait's): nothing kept on the server, every one
closed together however the reader ends."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._store import translate_errors


class Subscriptions:
    """Subscriptions on ``nc``, made by ``add`` (its failures reported as ``action`` fails) and
    all ended by ``close``."""

    def __init__(self, nc: Client, action: str) -> None:
        self._nc = nc
        self._action = action
        self._held: list[Subscription] = []

    def __bool__(self) -> bool:
        return bool(self._held)

    async def add(self, subject: str, heard: Callable[[Msg], Awaitable[None]]) -> None:
        """Hear every message on ``subject`` from now on (the server knows of it once the
        connection has flushed)."""
        async with translate_errors(self._action):
            self._held.append(await self._nc.subscribe(subject, cb=heard))

    async def opening(self, subscribe: Callable[[], Awaitable[None]]) -> None:
        """Run ``subscribe`` (which ``add``s); if it fails, those it made are closed."""
        try:
            await subscribe()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """End every subscription (one the connection lost already is gone anyway)."""
        held, self._held = self._held, []
        for subscription in held:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
