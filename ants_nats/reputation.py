"""Reputation: how much the swarm trusts an agent with a capability, from its persisted history.

Scores are Beta reputations with exponential forgetting (see ``Score``), folded from the trail by
the ledger projection (``services/ledger``) into ``ants_ledger``; they can be rebuilt from the
trail at any time. Nothing central acts on them: every claim made through the library checks the
claimant's own scores. Below ``quarantine_below`` for a required capability an agent gets no fresh
work of that kind; it may still take a task on *probation* once the task's ticket has been offered
``probation_after`` times (others had their chance), and recovers by succeeding there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from nats.aio.client import Client

from ._connect import jetstream
from ._store import Bucket
from .models import ANY_CAPABILITY, AgentLedger, parse_or_none, utcnow
from .names import LEDGER_BUCKET

COUNTED = (
    "claimed",
    "completed",
    "failed",
    "expired",
    "released",
    "declined",
    "asked",
    "bad_result",
    "forged",
)
"""What the ledger counts: ``task.<what>`` events, ``bad_result`` marks, and ``forged``: the
``corrupt.forged_record`` events of a signed board (a task revision its signer had no right to write)."""

EVIDENCE: dict[str, tuple[float, float]] = {
    "completed": (1.0, 0.0),
    "failed": (0.0, 1.0),  # handler errors and timeouts alike
    "expired": (0.0, 1.0),  # claimed, then abandoned
    "bad_result": (0.0, 2.0),  # a result someone later showed to be wrong
    "forged": (0.0, 5.0),  # a task record rewritten without the right to (never an accident)
}
"""(good, bad) evidence each outcome adds to the agent's score for the task's capabilities. A
decline adds none: declining is free (what costs is announcing a capability and then failing or
abandoning its work)."""


@dataclass(frozen=True)
class ReputationConfig:
    """How reputation is weighed. Every agent of a swarm should use the same values."""

    half_life: float = 3600.0
    """Seconds in which evidence loses half its weight."""
    quarantine_below: float = 0.3
    """Score under which an agent gets no fresh work for a capability (two straight failures)."""
    prefer_above: float = 0.5
    """Agents scoring under this let others go first on a fresh ticket."""
    probation_after: int = 3
    """Deliveries of a ticket after which a quarantined agent may take the task on probation."""
    cache_seconds: float = 1.0
    """How long a claimant reuses a score it read (one ledger read per agent per this period)."""


class Reputation:
    """Reads scores from ``ants_ledger`` (with a short cache) and applies the quarantine rule."""

    def __init__(self, nc: Client, config: ReputationConfig | None = None) -> None:
        self.config = config or ReputationConfig()
        self._bucket = Bucket(jetstream(nc), LEDGER_BUCKET)
        self._cache: dict[str, tuple[float, AgentLedger]] = {}

    async def ledger(self, agent: str) -> AgentLedger:
        """The agent's ledger entry (empty when it has none yet)."""
        hit = self._cache.get(agent)
        if hit is not None and time.monotonic() - hit[0] < self.config.cache_seconds:
            return hit[1]
        entry = await self._bucket.get(agent)
        parsed = parse_or_none(AgentLedger, entry.value, where=f"{LEDGER_BUCKET}/{agent}") if entry else None
        ledger = parsed or AgentLedger(agent=agent)
        self._cache[agent] = (time.monotonic(), ledger)
        return ledger

    async def scores(self, agent: str, requires: Iterable[str]) -> dict[str, float]:
        """The agent's current score for each capability in ``requires`` (``any`` if none)."""
        ledger = await self.ledger(agent)
        now = utcnow()
        caps = sorted(set(requires)) or [ANY_CAPABILITY]
        return {
            cap: ledger.scores[cap].value(now, self.config.half_life) if cap in ledger.scores else 0.5
            for cap in caps
        }

    async def quarantined(self, agent: str, requires: Iterable[str]) -> list[str]:
        """Capabilities of ``requires`` for which ``agent`` is quarantined (empty: it may work)."""
        scores = await self.scores(agent, requires)
        return [cap for cap, score in scores.items() if score < self.config.quarantine_below]
