"""What an agent hears of cancels (``task.cancelled`` on the trail), and what it does with the news.

A cancel stops the attempt at that task, if it runs here (``RunningAttempt.cancel``). The news also
tells whether the copy of the record a ticket carries may stand for the record (the claim then
needs no read): not for a task said to be cancelled lately, nor for a ticket published before the
agent began to listen, which may hide a cancel it never heard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .models import Ticket, TrailEvent, utcnow
from .trail import Trail

NEWS_KEPT_S = 600.0
"""How long an agent remembers that a task was cancelled (its ticket reads the record meanwhile)."""


class _Recent:
    """Task ids noted lately, each for a while (loop time); expired ones are dropped as new come."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def note(self, task_id: str, seconds: float) -> None:
        now = asyncio.get_running_loop().time()
        self._until = {t: until for t, until in self._until.items() if until > now}
        self._until[task_id] = now + seconds

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._until.get(task_id, 0.0) > asyncio.get_running_loop().time()


class CancelNews:
    """One agent's ear for cancels: ``start`` listening, ``stop`` at the end. ``on_cancel`` is
    called with the id of each task said to be cancelled (to stop its attempt, if it runs)."""

    def __init__(self, trail: Trail, on_cancel: Callable[[str], None]) -> None:
        self._trail = trail
        self._on_cancel = on_cancel
        self._sub: Subscription | None = None
        self._since: datetime | None = None
        """When this agent began to hear cancels: a ticket published earlier may hide one."""
        self._cancelled = _Recent()
        """Tasks announced as cancelled lately (their tickets read the record meanwhile)."""

    async def start(self) -> None:
        """Listen for cancels from now on."""
        self._sub = await self._trail.listen("task.cancelled", self._heard)
        self._since = utcnow()

    async def stop(self) -> None:
        """Stop listening."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _heard(self, event: TrailEvent) -> None:
        """Remember the news for a ticket of the task still on its way, and pass it on."""
        self._cancelled.note(event.ref, NEWS_KEPT_S)
        self._on_cancel(event.ref)

    def trusts(self, ticket: Ticket, msg: Msg) -> bool:
        """Whether the ticket's copy of the record can stand for it: not when the task was said to
        be cancelled, nor when the ticket (delivered as ``msg``) is older than this ear."""
        if ticket.task_id in self._cancelled:
            return False
        since = self._since
        published = msg.metadata.timestamp
        # (Server time against ours: a clock behind the server's trusts tickets published up to
        # the difference before we listened; a cancel in that gap costs a run whose result the
        # board rejects.)
        return since is not None and published is not None and published > since
