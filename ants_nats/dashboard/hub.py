"""Fan-out of the model's deltas to every open browser tab, as server-sent events.

One set of feeds per dashboard process updates the model; each tab holds a bounded queue of
encoded frames. A tab that falls too far behind is dropped (its stream ends) rather than letting
memory grow: the browser's ``EventSource`` reconnects by itself and starts over from a snapshot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from ..log import get_logger
from .state import Json, SwarmState

log = get_logger("dashboard")

QUEUE_FRAMES = 10_000
"""Frames a tab may lag behind before it is dropped (and reconnects to a fresh snapshot)."""


def frame(delta: Json, event_id: int) -> bytes:
    """One server-sent event (``data:`` is a single line: JSON has no raw newlines)."""
    return f"id: {event_id}\ndata: {json.dumps(delta, separators=(',', ':'))}\n\n".encode()


class Subscription:
    """One tab's stream: frames to send, then None when the stream should end."""

    def __init__(self, first: bytes, size: int) -> None:
        self._frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size)
        self._frames.put_nowait(first)
        self.dropped = False

    def offer(self, data: bytes) -> bool:
        """Queue ``data``; False (and the stream is ended) when the tab is too far behind."""
        try:
            self._frames.put_nowait(data)
        except asyncio.QueueFull:
            self.end()
            self.dropped = True
            return False
        return True

    def end(self) -> None:
        """End the stream after nothing more (what is queued is dropped: the tab starts over)."""
        while not self._frames.empty():
            self._frames.get_nowait()
        self._frames.put_nowait(None)

    async def next(self) -> bytes | None:
        """The next frame to send, or None at the end of the stream."""
        return await self._frames.get()


class Hub:
    """Sends the model's deltas to every subscribed tab."""

    def __init__(self, state: SwarmState, *, queue_frames: int = QUEUE_FRAMES) -> None:
        self.state = state
        self._subscriptions: set[Subscription] = set()
        self._queue_frames = queue_frames
        self._next_id = 0

    @property
    def tabs(self) -> int:
        """How many tabs are subscribed."""
        return len(self._subscriptions)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def subscribe(self) -> Subscription:
        """A new stream starting with a snapshot of the model.

        The snapshot is taken and the subscription registered without an ``await`` in between,
        so the tab misses no delta and sees none twice.
        """
        subscription = Subscription(frame(self.state.snapshot(), self._id()), self._queue_frames)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a stream (its tab went away)."""
        self._subscriptions.discard(subscription)

    def publish(self, deltas: Json | Iterable[Json] | None) -> None:
        """Send deltas (one, several, or None for nothing) to every tab."""
        if deltas is None:
            return
        for delta in [deltas] if isinstance(deltas, dict) else deltas:
            data = frame(delta, self._id())
            for subscription in list(self._subscriptions):
                if not subscription.offer(data):
                    self._subscriptions.discard(subscription)
                    log.warning("dashboard.tab_dropped", reason="too far behind", queued=self._queue_frames)

    def close(self) -> None:
        """End every stream (the dashboard is stopping)."""
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()
