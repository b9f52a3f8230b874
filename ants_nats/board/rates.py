"""Shared rate limits: what every agent serving a capability may start, swarm-wide, with no
limiter process.

A limit (``ants_limits/<capability>``) says how many handler runs and reported tokens may start
in any ``per`` seconds. What was reserved lately is one key per capability (``ants_rates``), a
sliding window of twenty slots, changed by compare-and-set only: an agent reads it, and if the
window has room it reserves one request in the current slot with a CAS on the revision it read (a
conflict means someone else reserved meanwhile: read again). Counting one slot more than the interval
spans makes the window conservative: no interval of ``per`` seconds ever holds more than the limit
(as far as the agents' clocks agree). Tokens are charged after the work, when the handler has said
what it spent, so a token limit may be overshot by the work in flight; a full window then keeps
everyone waiting until enough of it has slid past. Capabilities without a limit cost nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import aclosing

from nats.js import JetStreamContext

from .._store import Bucket, Conflict, ensure_kv
from .._watch import watch_values
from ..errors import InvalidTask, LimitNotFound
from ..log import get_logger
from ..models import Limit, RateSlot, RateWindow, parse_or_none, wire_bytes
from ..names import LIMITS_BUCKET, RATES_BUCKET, is_valid_capability

log = get_logger("rates")

SLOTS = 20
"""Slots an interval is cut into: the window is exact to a twentieth of the interval."""


class Rates:
    """The limits (``ants_limits``) and what was reserved of them (``ants_rates``)."""

    def __init__(self, js: JetStreamContext, *, replicas: int) -> None:
        self._js = js
        self._replicas = replicas
        self._limits = Bucket(js, LIMITS_BUCKET)
        self._windows = Bucket(js, RATES_BUCKET)

    async def ensure(self) -> None:
        """Create both buckets unless they exist."""
        await ensure_kv(self._js, LIMITS_BUCKET, replicas=self._replicas, history=1)
        await ensure_kv(self._js, RATES_BUCKET, replicas=self._replicas, history=1)

    async def set(self, limit: Limit) -> Limit:
        """Set (or replace) the limit on ``limit.capability``."""
        await self._limits.put(limit.capability, wire_bytes(limit))
        log.info(
            "limit.set",
            capability=limit.capability,
            requests=limit.requests,
            tokens=limit.tokens,
            per=limit.per,
        )
        return limit

    async def get(self, capability: str) -> Limit | None:
        """The limit on ``capability``, if any."""
        entry = await self._limits.get(_checked(capability))
        return None if entry is None else parse_limit(capability, entry.value)

    async def all(self) -> list[Limit]:
        """Every limit, by capability."""
        limits = []
        async with aclosing(watch_values(self._js, LIMITS_BUCKET, history_only=True)) as values:
            async for key, value in values:
                limit = parse_limit(key, value)
                if limit is not None:
                    limits.append(limit)
        return sorted(limits, key=lambda limit: limit.capability)

    async def remove(self, capability: str) -> None:
        """Lift the limit on ``capability``; ``LimitNotFound`` if there is none."""
        entry = await self._limits.get(_checked(capability))
        if entry is None:
            raise LimitNotFound(f"no limit is set on {capability!r}")
        await self._limits.delete(capability, last=entry.revision)
        log.info("limit.removed", capability=capability)

    async def reserve(self, limit: Limit) -> tuple[float, int]:
        """Reserve one request of ``limit`` now: ``(0.0, slot)`` if reserved in ``slot``, else
        ``(seconds until the window has room, slot)`` (nothing reserved)."""
        return await self._change(limit, lambda window, slot: reserved(limit, window, slot))

    async def room(self, limit: Limit) -> float:
        """Seconds until the window of ``limit`` has room for one more request (0.0: now),
        reserving nothing (a look, for saying why work waits)."""

        def look(window: list[RateSlot], slot: int) -> float:
            judged = reserved(limit, window, slot)
            return judged if isinstance(judged, float) else 0.0  # room: nothing to write

        wait, _ = await self._change(limit, look)
        return wait

    async def refund(self, limit: Limit, slot: int) -> None:
        """Give up a request reserved in ``slot`` that no work used (its claim lost)."""
        await self._change(limit, lambda window, _: refunded(window, slot))

    async def charge(self, limit: Limit, tokens: int) -> None:
        """Add ``tokens`` that a handler reported to the window of ``limit``."""
        await self._change(limit, lambda window, slot: added(window, slot, tokens=tokens))

    async def _change(
        self, limit: Limit, change: Callable[[list[RateSlot], int], float | list[RateSlot]]
    ) -> tuple[float, int]:
        """CAS ``change`` into the window of ``limit`` (re-reading on conflicts). ``change`` gets
        the live slots and the current slot, and returns new slots, or (a float) how many slot
        lengths from the start of the current one to wait. Returns the seconds to wait (0.0 once
        written) and the slot it was judged in."""
        length = limit.per / SLOTS
        while True:
            entry = await self._windows.get(limit.capability)
            # The time after the read: a reader that waited (a busy process) must not judge, and
            # write back, a window others have moved on meanwhile as of an older time.
            now = time.time()
            slot = math.floor(now / length)
            window = (
                None
                if entry is None
                else parse_or_none(RateWindow, entry.value, where=f"{RATES_BUCKET}/{limit.capability}")
            )
            changed = change(live_slots(window, slot), slot)
            if isinstance(changed, float):
                return max(changed * length - (now - slot * length), 0.0), slot
            value = wire_bytes(RateWindow(slots=tuple(changed)))
            try:
                if entry is None:
                    await self._windows.create(limit.capability, value)
                else:
                    await self._windows.update(limit.capability, value, last=entry.revision)
            except Conflict:
                continue
            return 0.0, slot


def live_slots(window: RateWindow | None, slot: int) -> list[RateSlot]:
    """The slots of ``window`` that count in ``slot``: the last interval's. A slot a whole interval
    ahead (a clock far off, or a hostile writer) is dropped too: it would otherwise fill the window
    for as long as it lasts."""
    return [s for s in (window.slots if window else ()) if slot - SLOTS <= s.n <= slot + SLOTS]


def reserved(limit: Limit, window: list[RateSlot], slot: int) -> float | list[RateSlot]:
    """``window`` (the live slots) with one more request reserved in ``slot``, or (as a float) how
    many slot lengths from the start of ``slot`` until enough old slots have left the window."""
    for oldest in range(slot - SLOTS, slot + 1):
        rest = [s for s in window if s.n >= oldest]
        requests = sum(s.requests for s in rest)
        tokens = sum(s.tokens for s in rest)
        fits = (limit.requests is None or requests < limit.requests) and (
            limit.tokens is None or tokens < limit.tokens
        )
        if fits:
            if oldest == slot - SLOTS:
                return added(window, slot, requests=1)
            # Slot ``oldest - 1`` leaves the window when slot ``oldest + SLOTS`` begins.
            return float(oldest + SLOTS - slot)
    return float(SLOTS + 1)  # a limit of 0: ask again a full interval later


def refunded(window: list[RateSlot], slot: int) -> float | list[RateSlot]:
    """``window`` with one request reserved in ``slot`` given up, or 0.0 (nothing to write) when
    that slot has left the window already."""
    reserved = next((s for s in window if s.n == slot and s.requests > 0), None)
    if reserved is None:
        return 0.0
    back = reserved.model_copy(update={"requests": reserved.requests - 1})
    return [back if s.n == slot else s for s in window]


def added(window: list[RateSlot], slot: int, *, requests: int = 0, tokens: int = 0) -> list[RateSlot]:
    """``window`` with ``requests`` and ``tokens`` added to ``slot`` (a new slot if it has none)."""
    current = next((s for s in window if s.n == slot), RateSlot(n=slot))
    bumped = current.model_copy(
        update={"requests": current.requests + requests, "tokens": current.tokens + tokens}
    )
    return sorted([*(s for s in window if s.n != slot), bumped], key=lambda s: s.n)


def parse_limit(key: str, value: bytes) -> Limit | None:
    """The ``Limit`` stored under ``key`` (None, logged, when it does not validate or fit its key)."""
    limit = parse_or_none(Limit, value, where=f"{LIMITS_BUCKET}/{key}")
    return limit if limit is not None and limit.capability == key else None


def _checked(capability: str) -> str:
    if not isinstance(capability, str) or not is_valid_capability(capability):
        raise InvalidTask(f"invalid capability {capability!r}: 1-64 of a-z 0-9 _ -, starting alphanumeric")
    return capability
