"""The ledger: per-agent history and reputation projected from the trail into ``ants_ledger``.

The projection is a pure fold (``apply``) over task events, so it can be rebuilt from the trail at
any time. It is idempotent: each agent's entry remembers the last stream sequence it applied, and
the follower runs ``in_order``, so a redelivered event is recognised and skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client

from ._store import Bucket, Conflict, ensure_kv
from ._watch import watch_values
from .log import get_logger
from .models import ANY_CAPABILITY, AgentLedger, Counts, Score, TrailEvent, parse_or_none
from .names import BAD_RESULT_MARK, LEDGER_BUCKET, TRAIL_SUBJECT_PREFIX
from .reputation import COUNTED, EVIDENCE
from .trail import Trail
from .verify import Verifier

log = get_logger("ledger")

WATCHED = (f"{TRAIL_SUBJECT_PREFIX}.task.>", f"{TRAIL_SUBJECT_PREFIX}.mark.{BAD_RESULT_MARK}.>")


def _what(event: TrailEvent) -> str:
    return "bad_result" if event.kind == f"mark.{BAD_RESULT_MARK}" else event.kind.removeprefix("task.")


def accountable(event: TrailEvent) -> str | None:
    """The agent an event counts for: the actor, or for a bad-result mark the task's completer."""
    if _what(event) == "bad_result":
        data = event.data if isinstance(event.data, dict) else {}
        agent = data.get("agent")
        return agent if isinstance(agent, str) else None
    return event.agent


def apply(ledger: AgentLedger, event: TrailEvent, *, half_life: float) -> AgentLedger | None:
    """Fold one trail event into an agent's ledger; None when it changes nothing (or was seen)."""
    what = _what(event)
    if what not in COUNTED or event.seq is None or event.seq <= ledger.last_seq:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    requires = data.get("requires")
    capabilities = [str(c) for c in requires] if isinstance(requires, list) else []
    good, bad = EVIDENCE.get(what, (0.0, 0.0))
    # The outcome of a deferred claim (never written, so never announced) stands for its claim too.
    counted = [what, "claimed"] if data.get("deferred") is True else [what]
    by_capability = dict(ledger.by_capability)
    scores = dict(ledger.scores)
    totals = ledger.totals
    for cap in capabilities or [ANY_CAPABILITY]:
        counts = by_capability.get(cap, Counts())
        for each in counted:
            counts = counts.plus(each)
        by_capability[cap] = counts
        if good or bad:
            scores[cap] = scores.get(cap, Score()).add(good, bad, event.at, half_life)
    for each in counted:
        totals = totals.plus(each)
    return ledger.model_copy(
        update={
            "totals": totals,
            "by_capability": by_capability,
            "scores": scores,
            "last_seq": event.seq,
            "updated_at": event.at.isoformat(),
        }
    )


class Ledger:
    """Read and update the per-agent ledger."""

    def __init__(self, nc: Client, *, replicas: int = 1, half_life: float = 3600.0) -> None:
        self._nc = nc
        self._replicas = replicas
        self._half_life = half_life
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

    async def all(self) -> list[AgentLedger]:
        """Every agent's ledger entry."""
        found = []
        async for key, value in watch_values(self._nc.jetstream(), LEDGER_BUCKET, history_only=True):
            found.append(self._parse(key, value))
        return found

    async def record(self, event: TrailEvent) -> bool:
        """Apply ``event`` to its agent's entry with CAS; True when it changed the ledger."""
        agent = accountable(event)
        if agent is None:
            return False
        return await self._update(agent, lambda ledger: apply(ledger, event, half_life=self._half_life))

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

    async def project(
        self, trail: Trail, *, durable: str = "ledger", verifier: Verifier | None = None
    ) -> None:
        """Follow the trail's task events forever, folding them into the ledger in order.

        With a ``verifier``, events whose signature does not match their author's announced key
        are left out (and recorded as ``corrupt.forged``): nobody can buy reputation with forgeries.
        """
        await self.ensure()
        async for event in trail.follow(WATCHED, durable=durable, in_order=True):
            if verifier is not None and await verifier.check(event) == "forged":
                log.warning("ledger.forged_event", kind=event.kind, by=event.by, seq=event.seq)
                await trail.emit(
                    TrailEvent(
                        kind="corrupt.forged", ref=str(event.seq), data={"kind": event.kind, "by": event.by}
                    )
                )
                continue
            if await self.record(event):
                log.debug("ledger.applied", agent=event.agent, kind=event.kind, seq=event.seq)


__all__ = ["Ledger", "accountable", "apply"]
