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

On a signed board a window is a chain (see ``chain``): each reservation or charge is signed by its
agent, and every reader checks each step (``Taking``): nothing taken in a slot still inside the
interval ever goes down. A forged revision is undone by its next reader and its signer named; a
window whose history was erased counts as full for one interval from the erasure. Reservations a
lost claim did not use are not given back there (a refund could not be told from a forgery): the
window errs towards less work.
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
from ..identity import Identity
from ..log import get_logger
from ..models import Limit, RateSlot, RateWindow, parse_or_none, utcnow, wire_bytes
from ..names import LIMITS_BUCKET, RATES_BUCKET, is_valid_capability
from .chain import TALLY_DEPTH, Forged, Link, Rules, Tally, Witness

log = get_logger("rates")

SLOTS = 20
"""Slots an interval is cut into: the window is exact to a twentieth of the interval."""
CLOCK_SKEW_S = 5.0
"""How far a writer's clock may be from the server's when it lets old slots go."""


class Rates:
    """The limits (``ants_limits``) and what was reserved of them (``ants_rates``)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        replicas: int,
        identities: dict[str, Identity] | None = None,
        witness: Witness | None = None,
    ) -> None:
        self._js = js
        self._replicas = replicas
        self._limits = Bucket(js, LIMITS_BUCKET)
        self._windows = Bucket(js, RATES_BUCKET)
        self._identities = identities if identities is not None else {}
        self._tally: Tally[RateWindow] = Tally(js, self._windows, depth=TALLY_DEPTH, witness=witness)
        self.signed = False
        """Whether the board is signed (its board sets this when it reads its tasks stream)."""

    async def ensure(self, *, signed: bool = False) -> None:
        """Create both buckets unless they exist; a ``signed`` board's windows keep the chain
        readers judge."""
        await ensure_kv(self._js, LIMITS_BUCKET, replicas=self._replicas, history=1)
        await self._tally.ensure(replicas=self._replicas, signed=signed)

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

    async def reserve(self, limit: Limit, *, by: str | None = None) -> tuple[float, int]:
        """Reserve one request of ``limit`` now, for agent ``by`` (who signs it on a signed
        board): ``(0.0, slot)`` if reserved in ``slot``, else ``(seconds until the window has
        room, slot)`` (nothing reserved)."""
        return await self._change(limit, lambda window, slot: reserved(limit, window, slot), by=by)

    async def room(self, limit: Limit) -> float:
        """Seconds until the window of ``limit`` has room for one more request (0.0: now),
        reserving nothing (a look, for saying why work waits)."""

        def look(window: list[RateSlot], slot: int) -> float:
            judged = reserved(limit, window, slot)
            return judged if isinstance(judged, float) else 0.0  # room: nothing to write

        wait, _ = await self._change(limit, look)
        return wait

    async def refund(self, limit: Limit, slot: int, *, by: str | None = None) -> None:
        """Give up a request reserved in ``slot`` that no work used (its claim lost); nothing on a
        signed board, whose windows only count up."""
        if not self.signed:
            await self._change(limit, lambda window, _: refunded(window, slot), by=by)

    async def charge(self, limit: Limit, tokens: int, *, by: str | None = None) -> None:
        """Add ``tokens`` that a handler reported to the window of ``limit``, for agent ``by``."""
        await self._change(limit, lambda window, slot: added(window, slot, tokens=tokens), by=by)

    async def forged_at(self, capability: str, revision: int) -> Forged | None:
        """The forgery at ``revision`` of the window of ``capability`` on a signed board, judged
        afresh (None: that revision is legal, no longer kept, or there is no limit to judge by)."""
        limit = await self.get(capability)
        return None if limit is None else await self._tally.forged_at(capability, revision, Taking(limit))

    async def _change(
        self,
        limit: Limit,
        change: Callable[[list[RateSlot], int], float | list[RateSlot]],
        *,
        by: str | None = None,
    ) -> tuple[float, int]:
        """CAS ``change`` into the window of ``limit`` (re-reading on conflicts), signed for
        ``by`` on a signed board. ``change`` gets the live slots and the current slot, and returns
        new slots, or (a float) how many slot lengths from the start of the current one to wait.
        Returns the seconds to wait (0.0 once written) and the slot it was judged in."""
        length = limit.per / SLOTS
        capability = limit.capability
        signer = self._identities.get(by) if by is not None else None
        while True:
            window, last = await self._read(limit)
            # The time after the read: a reader that waited (a busy process) must not judge, and
            # write back, a window others have moved on meanwhile as of an older time.
            now = time.time()
            slot = math.floor(now / length)
            changed = change(live_slots(window, slot), slot)
            if isinstance(changed, float):
                return max(changed * length - (now - slot * length), 0.0), slot
            new = RateWindow(slots=tuple(changed))
            try:
                await self._tally.write(
                    capability, new, wire_bytes(new), last=last, signer=signer, signed=self.signed
                )
            except Conflict:
                continue
            return 0.0, slot

    async def _read(self, limit: Limit) -> tuple[RateWindow, int]:
        """The window of ``limit`` (on a signed board its last legal state, restored over forged
        revisions) and the revision a write goes over."""
        return await self._tally.current(limit.capability, Taking(limit), judged=self.signed)


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


class Taking(Rules[RateWindow]):
    """The rules of a signed rate window's chain: anyone takes from it, signed, never lowering
    what was taken in a slot still inside the interval (by the server's clock, give or take
    ``CLOCK_SKEW_S``); nobody deletes it."""

    def __init__(self, limit: Limit) -> None:
        self._limit = limit
        self._length = limit.per / SLOTS

    def creation(self) -> RateWindow:
        return RateWindow()

    def erased(self, link: Link) -> RateWindow:
        # Whatever was taken is unknown: the window counts as full for one interval from then.
        slot = math.floor((link.time or utcnow()).timestamp() / self._length)
        full = RateSlot(n=slot, requests=self._limit.requests or 0, tokens=self._limit.tokens or 0)
        return RateWindow(slots=(full,))

    def adopted(self, link: Link) -> RateWindow | None:
        return None if link.deleted else self._parse(link.payload)

    def step(self, before: RateWindow, after: Link) -> RateWindow | str:
        window = None if after.deleted else self._parse(after.payload)
        if window == before:
            return before  # changes nothing (a legal revision written back)
        if window is None:
            return "deletes a rate window" if after.deleted else "not a rate window"
        if after.signer is None:
            return "unsigned"
        written = (after.time or utcnow()).timestamp()
        oldest = math.floor((written + CLOCK_SKEW_S) / self._length) - SLOTS
        newest = math.floor((written - CLOCK_SKEW_S) / self._length) + SLOTS
        taken = {s.n: s for s in window.slots}
        for kept in before.slots:
            now = taken.get(kept.n)
            live = oldest <= kept.n <= newest
            if live and (now is None or now.requests < kept.requests or now.tokens < kept.tokens):
                return f"lowers what was taken in slot {kept.n} of the window"
        return window

    def floor(self, state: RateWindow, known: RateWindow) -> RateWindow:
        most = {s.n: s for s in state.slots}
        for slot in known.slots:
            now = most.get(slot.n, RateSlot(n=slot.n))
            most[slot.n] = RateSlot(
                n=slot.n, requests=max(now.requests, slot.requests), tokens=max(now.tokens, slot.tokens)
            )
        return state.model_copy(update={"slots": tuple(sorted(most.values(), key=lambda s: s.n))})

    def _parse(self, value: bytes) -> RateWindow | None:
        return parse_or_none(RateWindow, value, where=f"{RATES_BUCKET}/{self._limit.capability}")


def parse_limit(key: str, value: bytes) -> Limit | None:
    """The ``Limit`` stored under ``key`` (None, logged, when it does not validate or fit its key)."""
    limit = parse_or_none(Limit, value, where=f"{LIMITS_BUCKET}/{key}")
    return limit if limit is not None and limit.capability == key else None


def _checked(capability: str) -> str:
    if not isinstance(capability, str) or not is_valid_capability(capability):
        raise InvalidTask(f"invalid capability {capability!r}: 1-64 of a-z 0-9 _ -, starting alphanumeric")
    return capability
