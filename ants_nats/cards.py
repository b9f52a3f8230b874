"""Capability broadcasting: agent cards in ``ants_agents`` (expiring) and on ``ants.cap.<id>``.

An agent announces what it *can* do, plus its load, periodically and when something changes. The
bucket keeps the last card per agent with a per-key TTL, so a late joiner reads the full picture at
once and a crashed agent's card disappears by itself (the expiry marker is the "left" event).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from nats.aio.client import Client
from nats.js import JetStreamContext

from . import matching
from ._connect import jetstream
from ._store import Bucket, Conflict, ensure_kv, translate_errors
from ._watch import watch_entries, watch_values
from .errors import AntsError
from .log import get_logger
from .models import AgentCard, parse_or_none, utcnow, wire_bytes
from .names import AGENTS_BUCKET, card_subject

log = get_logger("cards")


@dataclass(frozen=True)
class CardChange:
    """A change in the set of live agents."""

    kind: Literal["joined", "changed", "left"]
    agent_id: str
    card: AgentCard | None
    """The new card (None when the agent left)."""


_CLOCK_SKEW_S = 2.0
"""Tolerance between an announcer's clock and ours when judging a card's age."""


def _card(key: str, value: bytes) -> AgentCard | None:
    return parse_or_none(AgentCard, value, where=f"{AGENTS_BUCKET}/{key}")


class Directory:
    """Who is alive and what can they do: read the cards, or watch them change."""

    def __init__(self, nc: Client, *, replicas: int = 1, card_ttl: float = 10.0) -> None:
        self._nc = nc
        self._js: JetStreamContext = jetstream(nc)
        self._bucket = Bucket(self._js, AGENTS_BUCKET)
        self.replicas = replicas
        self.card_ttl = card_ttl
        self._snapshot: tuple[float, tuple[AgentCard, ...]] | None = None
        self._reading: asyncio.Future[tuple[AgentCard, ...]] | None = None
        """The pass over the bucket under way, if any (``cards`` callers that accept a recent
        reading share it rather than each opening a consumer of its own)."""

    async def ensure(self) -> None:
        """Create the bucket unless it exists (per-key TTLs with expiry markers)."""
        await ensure_kv(
            self._js, AGENTS_BUCKET, replicas=self.replicas, history=1, marker_ttl=max(self.card_ttl, 1.0)
        )

    async def cards(self, *, max_age: float = 0.0) -> list[AgentCard]:
        """Every live agent's card (one pass over the bucket), or the last pass if it is younger
        than ``max_age`` seconds."""
        now = time.monotonic()
        if self._snapshot is not None and now - self._snapshot[0] < max_age:
            return list(self._snapshot[1])
        if max_age > 0 and self._reading is not None:
            # A shared pass that failed (or whose reader was cancelled): read for ourselves.
            with contextlib.suppress(Exception):
                return list(await asyncio.shield(self._reading))
        reading = self._reading = asyncio.get_running_loop().create_future()
        try:
            found = []
            async for key, value in watch_values(self._js, AGENTS_BUCKET, history_only=True):
                card = self._live(key, value)
                if card is not None:
                    found.append(card)
        except BaseException as exc:
            if not reading.done():
                shared = exc if isinstance(exc, Exception) else AntsError("reading the cards was interrupted")
                reading.set_exception(shared)
                reading.exception()  # retrieved: a failed pass nobody shared is no "never retrieved"
            raise
        finally:
            if self._reading is reading:
                self._reading = None
        self._snapshot = (now, tuple(found))
        reading.set_result(self._snapshot[1])
        return found

    async def announcing(self, public_key: str, *, max_age: float = 30.0) -> str | None:
        """The live agent whose card announces ``public_key`` (None: nobody), from a pass over the
        cards at most ``max_age`` seconds old."""
        cards = await self.cards(max_age=max_age)
        return next((card.id for card in cards if card.public_key == public_key), None)

    async def who_can(self, requires: Iterable[str], kind: str | None = None) -> list[AgentCard]:
        """Live agents having every capability in ``requires`` (and a handler for ``kind``, if
        given), least loaded first."""
        return matching.rank(await self.cards(), requires, kind)

    async def watch(self) -> AsyncGenerator[CardChange, None]:
        """Joins, changes and departures (including crashes, via expiry) as they happen; the agents
        already alive come first as ``joined``."""
        alive: set[str] = set()
        async with aclosing(watch_entries(self._js, AGENTS_BUCKET)) as entries:
            async for key, value in entries:
                if value is None:
                    if key in alive:
                        alive.discard(key)
                        yield CardChange("left", key, None)
                    continue
                card = self._live(key, value)
                if card is None:
                    continue
                kind: Literal["joined", "changed"] = "changed" if key in alive else "joined"
                alive.add(key)
                yield CardChange(kind, key, card)

    async def card(self, agent_id: str) -> AgentCard | None:
        """The live card of ``agent_id``, or None."""
        entry = await self._bucket.get(agent_id)
        return self._live(agent_id, entry.value) if entry else None

    def _live(self, key: str, value: bytes) -> AgentCard | None:
        """The card stored under ``key``, unless it is garbage or its agent stopped announcing it
        (its heartbeat older than a TTL). The key's expiry removes such a card, but a server that
        lost its TTL state on a crash brings cards of long-dead agents back: liveness is the
        heartbeat, not the key."""
        card = _card(key, value)
        if card is None:
            return None
        age = (utcnow() - card.heartbeat_at).total_seconds()
        if age > self.card_ttl + _CLOCK_SKEW_S:
            log.debug("card.stale", agent=key, age=age)
            return None
        return card

    async def announce(self, card: AgentCard) -> None:
        """Publish ``card``: kept in the bucket for ``card_ttl`` s and sent on ``ants.cap.<id>``."""
        value = wire_bytes(card)
        await self._bucket.put(card.id, value, ttl=self.card_ttl)
        async with translate_errors(f"announce {card.id}"):
            await self._nc.publish(card_subject(card.id), value)

    async def withdraw(self, agent_id: str) -> None:
        """Remove an agent's card at once (graceful departure)."""
        entry = await self._bucket.get(agent_id)
        if entry is not None:
            # Conflict: re-announced meanwhile by a concurrent loop; the TTL will clear it.
            with contextlib.suppress(Conflict):
                await self._bucket.delete(agent_id, last=entry.revision)
