"""The dashboard's feeds: one watch of the records, of the cards, of the ledger, of the routes and
one follower of the trail per dashboard process, plus the queue depths of the routes.

Each feed turns what it reads into model changes and publishes the deltas. Nothing here polls
the board: records, cards, the ledger, routes and the trail are all pushed by the server; only the
queue depths are asked for (one ``consumer_info`` per route), when the trail says tickets moved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from datetime import timedelta

import nats.errors
import nats.js.errors

from .._connect import jetstream
from ..board import TaskBoard
from ..errors import AntsError
from ..ledger import Ledger
from ..log import get_logger
from ..models import utcnow
from ..names import WORK_STREAM, work_consumer
from .hub import Hub
from .state import QueueDepth

log = get_logger("dashboard")

RESTART_DELAY_S = 1.0
"""Pause before a feed that failed (e.g. the server went away) starts again."""

QUEUE_REFRESH_S = 5.0
"""Queue depths are read at least this often (a redelivered ticket leaves no event on the trail)."""

QUEUE_MIN_GAP_S = 0.5
"""Queue depths are read at most this often, however busy the trail is."""

_INACTIVE_S = 300.0


class Feeds:
    """The coroutines that keep one ``Hub``'s model up to date with one board."""

    def __init__(self, board: TaskBoard, hub: Hub, *, window: float) -> None:
        self._board = board
        self._hub = hub
        self._window = window
        self._queues_dirty = asyncio.Event()
        self._marks_seeded = False

    def coroutines(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """Each feed by name (the dashboard runs and supervises them)."""
        return {
            "records": self.records,
            "cards": self.cards,
            "ledger": self.ledger,
            "routes": self.routes,
            "trail": self.trail,
            "queues": self.queues,
        }

    async def records(self) -> None:
        """Every task record, then every change."""
        state = self._hub.state
        async with aclosing(self._board.watch()) as records:
            async for record in records:
                self._hub.publish(state.on_record(record))

    async def cards(self) -> None:
        """Agents joining, changing and leaving (crashed ones when their card expires)."""
        state = self._hub.state
        async with aclosing(self._board.directory.watch()) as changes:
            async for change in changes:
                self._hub.publish(state.on_card(change))

    async def ledger(self) -> None:
        """The reputation of every agent, from the ledger bucket, as the ledger service updates it."""
        state = self._hub.state
        async with aclosing(Ledger(self._board.nc).watch()) as entries:
            async for agent, ledger in entries:
                self._hub.publish(state.on_ledger(agent, ledger))

    async def routes(self) -> None:
        """Routes as they are registered (each has a queue of tickets)."""
        state = self._hub.state
        async with aclosing(self._board.routes.watch()) as routes:
            async for route in routes:
                self._hub.publish(state.on_route(route))
                self._queues_dirty.set()

    async def trail(self) -> None:
        """The trail from ``window`` seconds ago on (the charts cover that much), then live; the
        marks' strength measured once first, since marks may be older than the window."""
        state = self._hub.state
        since = utcnow() - timedelta(seconds=self._window)
        if not self._marks_seeded:
            await self._seed_marks()
            self._marks_seeded = True
        else:
            since = state.events[-1].at if state.events else since  # restarted: go on from there
        async with aclosing(self._board.trail.watch(since=since)) as events:
            async for event in events:
                self._hub.publish(state.on_event(event))
                if state.queue_relevant(event):
                    self._queues_dirty.set()

    async def _seed_marks(self) -> None:
        state = self._hub.state
        try:
            scents = await self._board.trail.strongest(limit=1000)
        except AntsError as exc:
            log.warning("dashboard.marks_unavailable", error=str(exc))
            return
        for scent in scents:
            state.seed_scent(scent)

    async def queues(self) -> None:
        """Ticket counts per route: read when the trail says tickets moved, and every few seconds."""
        state = self._hub.state
        js = jetstream(self._board.nc)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(QUEUE_REFRESH_S):
                    await self._queues_dirty.wait()
            self._queues_dirty.clear()
            depths: dict[str, QueueDepth] = {}
            for name, route in list(state.routes.items()):
                depth = QueueDepth()
                depth.pending, depth.in_flight = await _consumer_counts(js, work_consumer(name))
                if route.express:
                    depth.express_pending, depth.express_in_flight = await _consumer_counts(
                        js, work_consumer(name, express=True)
                    )
                depths[name] = depth
            self._hub.publish(state.on_queues(depths))
            await asyncio.sleep(QUEUE_MIN_GAP_S)  # a rate limit, not a synchronisation


async def _consumer_counts(js: nats.js.JetStreamContext, consumer: str) -> tuple[int, int]:
    """(tickets waiting, tickets delivered and not acked) of a route's consumer; zeros if it is gone."""
    try:
        info = await js.consumer_info(WORK_STREAM, consumer)
    except nats.js.errors.NotFoundError:
        return 0, 0
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)
