"""An agent's side of the shared rate limits: what it knows of the limits and of holds, and
the check it makes before it works on a task.

Each agent keeps the limits in memory (read at start, then kept current by the bucket's own
update messages, ``$KV.ants_limits.>``), so a task whose capabilities have no limit costs no
message at all. A capability with a limit costs a read and a compare-and-set of its window per
task (``board.rates``). When a provider rate-limits a handler (``RateLimited``), the agent lays the
mark ``rate.held`` on the capability, with the time until which to hold back; every agent hears it
(and one that starts later reads the marks of the last ``MAX_HOLD_S``) and pulls no work of that
capability until then. Holding back locally after a full window is the same mechanism, unshared.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._connect import on_reconnect
from ._store import is_tombstone, translate_errors
from .board import TaskBoard
from .board.rates import parse_limit
from .log import get_logger
from .models import ANY_CAPABILITY, Limit, TrailEvent, utcnow
from .names import LIMITS_BUCKET, RATE_HOLD_MARK, trail_filter

log = get_logger("throttle")

MAX_HOLD_S = 3600.0
"""The longest hold an agent honours (a mark asking for longer is cut to this): a hostile or
confused agent cannot stop a capability for good."""

_LIMIT_SUBJECTS = f"$KV.{LIMITS_BUCKET}.>"


@dataclass
class Reservation:
    """What ``Throttle.reserve`` reserved: ``wait`` (0.0: go), and the requests reserved, by
    window slot."""

    wait: float
    reserved: list[tuple[Limit, int]] = field(default_factory=list)


def _limited_as(requires: Iterable[str]) -> tuple[str, ...]:
    """The capabilities whose limits and holds apply to work requiring ``requires`` (``any`` for
    tasks that require nothing)."""
    return tuple(requires) or (ANY_CAPABILITY,)


class Throttle:
    """What one process knows of the swarm's rate limits and holds: ``async with Throttle(board,
    who)``. The agent runtime keeps one per agent; a gateway can keep one to turn away work the
    swarm holds back (``held_for``). Each method takes the capabilities a task requires."""

    def __init__(self, board: TaskBoard, agent_id: str) -> None:
        self._board = board
        self._agent_id = agent_id
        self._limits: dict[str, Limit] = {}
        self._live: set[str] = set()
        """Capabilities whose limit changed since the start (the first read must not undo that)."""
        self._held: dict[str, float] = {}
        """Until when (unix time) to start no work of a capability."""
        self._subs: list[Subscription] = []
        self._stale = False
        """Reconnected since the limits and holds were read: read them again before the next
        reservation."""
        self._stop_listening: Callable[[], None] | None = None

    async def start(self) -> None:
        """Listen for changes of limits and for holds, then read what is in force now."""
        nc = self._board.nc
        async with translate_errors("listen for rate limits"):
            limits = await nc.subscribe(_LIMIT_SUBJECTS, cb=self._on_limit)
        # (Listening flushes the connection: the server knows of both subscriptions after it.)
        self._subs = [limits, await self._board.trail.listen(f"mark.{RATE_HOLD_MARK}", self._heard)]
        self._stop_listening = on_reconnect(nc, self._reconnected)
        await self._read()

    async def _read(self) -> None:
        """Read the limits and the holds of the last ``MAX_HOLD_S`` (changes heard since the
        subscriptions began are kept)."""
        self._stale = False
        fresh = {limit.capability: limit for limit in await self._board.limits()}
        for capability in (set(self._limits) | set(fresh)) - self._live:
            if capability in fresh:
                self._limits[capability] = fresh[capability]
            else:  # lifted while this process did not hear it
                self._limits.pop(capability, None)
        since = utcnow() - timedelta(seconds=MAX_HOLD_S)
        for event in await self._board.trail.replay(trail_filter(f"mark.{RATE_HOLD_MARK}"), since=since):
            self._heard(event)

    def _reconnected(self) -> None:
        # What was published while disconnected never reached the subscriptions.
        self._stale = True
        self._live.clear()

    async def stop(self) -> None:
        """Stop listening."""
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def held_for(self, requires: Iterable[str]) -> float:
        """Seconds until work requiring ``requires`` may start again (0.0: now)."""
        if not self._held:
            return 0.0
        now = time.time()
        return max(0.0, *(self._held.get(cap, 0.0) - now for cap in _limited_as(requires)))

    async def reserve(self, requires: Iterable[str]) -> Reservation:
        """Reserve one request in the window of each limited capability of work requiring
        ``requires``. ``Reservation.wait`` is 0.0 when every one had room, else the seconds until
        the fullest will have (nothing stays reserved then, and this process holds that work back
        meanwhile). Refund the reservation if no work comes of it (``refund``)."""
        if self._stale:
            await self._read()
        reservation = Reservation(self.held_for(requires))
        if reservation.wait > 0:
            return reservation
        for cap in _limited_as(requires):
            limit = self._limits.get(cap)
            if limit is None:
                continue
            wait, slot = await self._board.rates.reserve(limit, by=self._agent_id)
            if wait > 0:
                self._hold_locally(cap, time.time() + wait)
                log.info("limit.full", agent=self._agent_id, capability=cap, retry_after=round(wait, 3))
                await self.refund(reservation)  # the windows that had room get their requests back
                return Reservation(wait)
            reservation.reserved.append((limit, slot))
        return reservation

    async def refund(self, reservation: Reservation) -> None:
        """Give up the requests of ``reservation``: its work did not start (the claim lost)."""
        for limit, slot in reservation.reserved:
            await self._board.rates.refund(limit, slot, by=self._agent_id)
        reservation.reserved.clear()

    async def charge(self, requires: Iterable[str], tokens: int) -> None:
        """Add ``tokens`` that work requiring ``requires`` reported to its token-limited windows."""
        for cap in _limited_as(requires):
            limit = self._limits.get(cap)
            if limit is not None and limit.tokens is not None and tokens > 0:
                await self._board.rates.charge(limit, tokens, by=self._agent_id)

    async def hold(self, requires: Iterable[str], seconds: float, reason: str) -> None:
        """Hold work requiring ``requires`` back for ``seconds``, here and (by a trail mark)
        everywhere."""
        until = utcnow() + timedelta(seconds=min(seconds, MAX_HOLD_S))
        for cap in _limited_as(requires):
            self._hold_locally(cap, until.timestamp())
            await self._board.trail.mark(
                RATE_HOLD_MARK,
                key=cap,
                agent=self._agent_id,
                data={"until": until.isoformat(), "reason": reason},
            )
            log.warning(
                "limit.held", agent=self._agent_id, capability=cap, until=until.isoformat(), reason=reason
            )

    def _hold_locally(self, capability: str, until: float) -> None:
        self._held[capability] = max(self._held.get(capability, 0.0), min(until, time.time() + MAX_HOLD_S))

    async def _on_limit(self, msg: Msg) -> None:
        capability = msg.subject.removeprefix(f"$KV.{LIMITS_BUCKET}.")
        self._live.add(capability)
        if is_tombstone(msg.headers):
            self._limits.pop(capability, None)
            return
        limit = parse_limit(capability, msg.data)
        if limit is not None:
            self._limits[capability] = limit
            log.info("limit.heard", agent=self._agent_id, capability=capability)

    def _heard(self, event: TrailEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        until = data.get("until")
        try:
            when = datetime.fromisoformat(until) if isinstance(until, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None or when.timestamp() <= time.time():
            return
        self._hold_locally(event.ref, when.timestamp())
        log.info(
            "limit.hold_heard",
            agent=self._agent_id,
            capability=event.ref,
            until=when.isoformat(),
            by=event.agent,
        )
