"""The ledger: per-agent history projected from the trail into the ``ants_ledger`` bucket.

The projection is a pure fold (``apply``) over task events, so it can be rebuilt from the trail at
any time. It is idempotent: each agent's entry remembers the last stream sequence it applied, and
the follower runs ``in_order``, so a redelivered event is recognised and skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from pydantic import Field

from ._store import Bucket, Conflict, ensure_kv
from .log import get_logger
from .models import TrailEvent, _Wire, parse_or_none
from .names import LEDGER_BUCKET, TRAIL_SUBJECT_PREFIX
from .trail import Trail

log = get_logger("ledger")

COUNTED = ("claimed", "completed", "failed", "expired", "released")
"""Task events the ledger counts, by the ``task.<what>`` they are named after."""


class Counts(_Wire):
    """How often something happened."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    released: int = 0

    def plus(self, what: str) -> Counts:
        """These counts with one more ``what``."""
        return self.model_copy(update={what: getattr(self, what) + 1})


class AgentLedger(_Wire):
    """The value of key ``<agent id>`` in ``ants_ledger``."""

    agent: str
    totals: Counts = Counts()
    by_capability: dict[str, Counts] = Field(default_factory=dict)
    last_seq: int = 0
    updated_at: str = ""


def apply(ledger: AgentLedger, event: TrailEvent) -> AgentLedger | None:
    """Fold one trail event into an agent's ledger; None when it changes nothing (or was seen)."""
    what = event.kind.removeprefix("task.")
    if what not in COUNTED or event.seq is None or event.seq <= ledger.last_seq:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    requires = data.get("requires")
    capabilities = [str(c) for c in requires] if isinstance(requires, list) else []
    by_capability = dict(ledger.by_capability)
    for cap in capabilities or ["any"]:
        by_capability[cap] = by_capability.get(cap, Counts()).plus(what)
    return ledger.model_copy(
        update={
            "totals": ledger.totals.plus(what),
            "by_capability": by_capability,
            "last_seq": event.seq,
            "updated_at": event.at.isoformat(),
        }
    )


class Ledger:
    """Read and update the per-agent ledger."""

    def __init__(self, nc: Client, *, replicas: int = 1) -> None:
        self._nc = nc
        self._replicas = replicas
        self._bucket = Bucket(nc.jetstream(), LEDGER_BUCKET)

    async def ensure(self) -> None:
        """Create the bucket unless it exists."""
        await ensure_kv(self._nc.jetstream(), LEDGER_BUCKET, replicas=self._replicas, history=1)

    async def get(self, agent: str) -> AgentLedger:
        """The ledger of ``agent`` (empty if it never did anything)."""
        entry = await self._bucket.get(agent)
        return self._parse(agent, entry.value if entry else None)

    @staticmethod
    def _parse(agent: str, value: bytes | None) -> AgentLedger:
        parsed = (
            None if value is None else parse_or_none(AgentLedger, value, where=f"{LEDGER_BUCKET}/{agent}")
        )
        return parsed or AgentLedger(agent=agent)  # a corrupt entry is rebuilt from the next event on

    async def record(self, event: TrailEvent) -> bool:
        """Apply ``event`` to its agent's entry with CAS; True when it changed the ledger."""
        if event.agent is None:
            return False
        return await self._update(event.agent, lambda ledger: apply(ledger, event))

    async def _update(self, agent: str, change: Callable[[AgentLedger], AgentLedger | None]) -> bool:
        while True:
            entry = await self._bucket.get(agent)
            new = change(self._parse(agent, entry.value if entry else None))
            if new is None:
                return False
            value = new.model_dump_json().encode()
            try:
                if entry is None:
                    await self._bucket.create(agent, value)
                else:
                    await self._bucket.update(agent, value, last=entry.revision)
            except Conflict:
                continue
            return True

    async def project(self, trail: Trail, *, durable: str = "ledger") -> None:
        """Follow the trail's task events forever, folding them into the ledger in order."""
        await self.ensure()
        async for event in trail.follow(f"{TRAIL_SUBJECT_PREFIX}.task.>", durable=durable, in_order=True):
            if await self.record(event):
                log.debug("ledger.applied", agent=event.agent, kind=event.kind, seq=event.seq)


__all__ = ["COUNTED", "AgentLedger", "Counts", "Ledger", "apply"]
