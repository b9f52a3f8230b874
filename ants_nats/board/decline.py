"""Declining: an agent's free "no", and the task that no live agent will take.

A decline is not an attempt and costs the decliner nothing (reputation counts no declines). It
lets go of the claim and notes on the record who declined, how often and why: one note per agent,
so a record stays bounded however often it is turned down. A decline stands while the decliner's
offer (``AgentCard.offer``: capabilities, kinds, capacity) is unchanged.

Once no live agent able to take a task is left that has not declined it (or none is able at all:
nobody handles its kind), the task is *unroutable*: the record says why, its ticket is acked, and
its id waits in ``ants_unroutable``. An agent that joins or changes its offer reads that bucket and
announces again what it could take (``reroute``). Nobody decides for the others: the last decliner
sets the task aside, the newcomer brings it back. A task submitted with ``fail_unroutable`` fails
instead, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import JsonValue

from .. import matching
from .._watch import watch_values
from ..errors import TaskNotFound
from ..log import get_logger
from ..models import (
    MAX_DECLINES_KEPT,
    AgentCard,
    DeclineNote,
    TaskRecord,
    TaskStatus,
    UnroutableTask,
    Usage,
    parse_or_none,
    utcnow,
    wire_bytes,
)
from ..names import UNROUTABLE_BUCKET
from ._core import Core
from .lease import Lease, claim_facts
from .propagate import Propagation
from .settle import Settlement, spent

log = get_logger("board")

CARDS_MAX_AGE_S = 1.0
"""How long a decliner reuses the cards it read (a reading that looks final is made afresh)."""
_REASON_CHARS = 200
"""Longest reason a decline note keeps (the trail event keeps it whole)."""
_PAST_DEADLINE_S = 0.05
"""A ticket held back until a deadline comes back just after it, so the deadline has passed."""


class Declines:
    """Declines of one board's tasks, and its unroutable tasks."""

    def __init__(self, core: Core, settlement: Settlement, propagation: Propagation) -> None:
        self._core = core
        self._settlement = settlement
        self._propagation = propagation

    async def decline(
        self,
        lease: Lease,
        reason: str,
        *,
        offer: str,
        retry_after: float | None = None,
        usage: Usage | None = None,
    ) -> TaskRecord:
        """See ``TaskBoard.decline``."""
        core = self._core
        cards = await core.directory.cards(max_age=CARDS_MAX_AGE_S)
        now = utcnow()
        until = None if retry_after is None else now + timedelta(seconds=retry_after)
        note = DeclineNote(
            agent=lease.agent_id,
            count=1,
            reason=reason[:_REASON_CHARS],
            at=now,
            offer=offer,
            token=lease.token,
            until=until,
            usage=usage or None,
            spent=usage or None,
            key=core.key_of(lease.agent_id),
        )
        live = {card.id for card in cards}

        def declined(record: TaskRecord) -> dict[str, object]:
            notes = _noted(record.declines, note, live)
            after = record.model_copy(update={"status": TaskStatus.PENDING, "declines": notes})
            return {"status": after.status, "declines": notes, **_unroutable(after, cards)}

        final = await self._settlement.end(lease, "declined", declined, error=reason, usage=usage)
        await core.event(
            "task.declined",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data=spent({**claim_facts(lease, final), "reason": reason}, usage),
        )
        if final.unroutable_reason is not None:
            final = await self._set_aside(final, cards, by=lease.agent_id)
        return final

    async def held_back(self, record: TaskRecord) -> float | None:
        """See ``TaskBoard.held_back``."""
        return held_back(record, await self._core.directory.cards(max_age=CARDS_MAX_AGE_S), utcnow())

    async def reconsider(self, task_id: str, *, by: str | None = None) -> float | Literal["take"] | None:
        """See ``TaskBoard.reconsider``."""
        core = self._core
        try:
            record, revision = await core.get_entry(task_id)
        except TaskNotFound:
            return None  # nothing to announce: the ticket is garbage
        deadline = record.task.deadline
        if not record.ready or record.holder is not None or (deadline is not None and utcnow() > deadline):
            # Not a task waiting for a taker (finished, held, waiting, past its deadline): the
            # ticket is judged as any other, by a claim (which recovers, expires or fails).
            return "take"
        cards = await core.directory.cards(max_age=CARDS_MAX_AGE_S)
        if matching.declined_by_all(cards, record) is None:
            return 0.0

        marked = False

        def mark(fresh: TaskRecord) -> TaskRecord | None:
            nonlocal marked
            marked = False
            if not fresh.ready or fresh.holder is not None:
                return None
            because = _unroutable(fresh, cards)
            if not because or (fresh.unroutable, fresh.unroutable_reason) == tuple(because.values()):
                return None
            marked = True
            return fresh.model_copy(update=because)

        final, _ = await core.mutate(task_id, mark, known=(record, revision), by=by)
        if final.unroutable_reason is None or not final.ready:
            return "take"
        # Marked already (by a decliner that may have died before it kept the id): keep it again,
        # which costs one idempotent write, but say it on the trail only once.
        final = await self._set_aside(final, cards, by=by, news=marked)
        return held_back(final, cards, utcnow())

    async def _set_aside(
        self, record: TaskRecord, cards: list[AgentCard], *, by: str | None, news: bool = True
    ) -> TaskRecord:
        """``record`` is marked unroutable: keep its id where a newcomer looks (or fail it, if its
        submitter asked for that), and (``news``: it was just marked) say so on the trail."""
        core, task = self._core, record.task
        reason = record.unroutable_reason or "unroutable"
        if not task.fail_unroutable:
            # Kept even while a live agent's "not now" holds its ticket back: should that agent
            # leave, a newcomer still finds the task.
            entry = UnroutableTask(task_id=task.id, kind=task.kind, requires=task.requires, reason=reason)
            await core.unroutable.put(task.id, wire_bytes(entry))
            if news:
                log.warning("task.unroutable", task_id=task.id, reason=reason)
                data: JsonValue = {"missing": list(record.unroutable or ()), "reason": reason}
                await core.event("task.unroutable", task.id, data=data, by=by)
        # Judged again on a fresh reading of who is live: an agent that joined before the key was
        # written did not see it, and failing is for good.
        if matching.declined_by_all(await core.directory.cards(), record) is None:
            await self._bring_back(task.id, None)
            return record
        if task.fail_unroutable:
            return await self._propagation.finish_unclaimed(
                task.id, TaskStatus.FAILED, reason, event="task.failed", by=by
            )
        return record

    async def unroutable_ids(self) -> list[str]:
        """See ``TaskBoard.unroutable_ids``."""
        return sorted(
            [key async for key, _ in watch_values(self._core.js, UNROUTABLE_BUCKET, history_only=True)]
        )

    async def reroute(self, card: AgentCard, *, forgiven: Iterable[str] = ()) -> list[str]:
        """See ``TaskBoard.reroute``."""
        candidates = dict.fromkeys(forgiven, True)
        async for key, value in watch_values(self._core.js, UNROUTABLE_BUCKET, history_only=True):
            entry = parse_or_none(UnroutableTask, value, where=f"{UNROUTABLE_BUCKET}/{key}")
            # An unreadable entry is looked into all the same: the record decides.
            if entry is None or (set(entry.requires) <= card.capability_names and card.handles(entry.kind)):
                candidates.setdefault(key, False)
        brought = [
            task_id
            for task_id, forgive in candidates.items()
            if await self._bring_back(task_id, card, forgive)
        ]
        return brought

    async def _bring_back(self, task_id: str, card: AgentCard | None, forgive: bool = False) -> bool:
        """Clear the unroutable mark of ``task_id`` and announce it again (given ``card``, only if
        its agent could take it and has not declined it with its present offer, or ``forgive``:
        then its decline is taken back); drop its key once the task is no longer unroutable.
        Whether this call announced it."""
        core = self._core
        # Read first: a key written again after our change has a new revision and stays.
        entry = await core.unroutable.get(task_id)
        cleared = False

        def clear(record: TaskRecord) -> TaskRecord | None:
            nonlocal cleared
            cleared = False
            update: dict[str, object] = {}
            if forgive and card is not None and any(d.agent == card.id for d in record.declines):
                update["declines"] = tuple(d for d in record.declines if d.agent != card.id)
            fresh = record.model_copy(update=update)
            for_card = card is None or (card.can_take(fresh.task) and not fresh.declined(card))
            if _waits_aside(fresh) and for_card:
                update |= {"unroutable": None, "unroutable_reason": None}
                cleared = True
            return record.model_copy(update=update) if update else None

        try:
            final, revision = await core.mutate(task_id, clear, by=None if card is None else card.id)
        except TaskNotFound:
            final = None
        if final is not None and cleared:
            log.info("task.rerouted", task_id=task_id, agent=None if card is None else card.id)
            await self._propagation.announce(final, revision, again=True)
        if entry is not None and (final is None or not _waits_aside(final)):
            await core.drop_unroutable(task_id, entry.revision)
        return cleared


def held_back(record: TaskRecord, cards: list[AgentCard], now: datetime) -> float | None:
    """What becomes of the ticket of a task just declined or reconsidered, given the live
    ``cards``: None when it is done with (the task ended, or waits unroutable with its id kept in
    ``ants_unroutable``), else seconds the server should hold it back: 0, others may take it now;
    more, until the first "not now" of a live able agent lapses, or, for a task set aside with a
    deadline, until the deadline (whoever meets it then fails it)."""
    if record.status.terminal:
        return None
    if record.unroutable_reason is None:
        return 0.0
    lapse = record.declines_lapse(now, able={c.id: c for c in cards if c.can_take(record.task)})
    if lapse is not None:
        return lapse
    if record.task.deadline is not None:
        return max((record.task.deadline - now).total_seconds(), 0.0) + _PAST_DEADLINE_S
    return None


def _waits_aside(record: TaskRecord) -> bool:
    """Whether ``record``'s task waits, unroutable, with no ticket of its own."""
    return (
        record.status is TaskStatus.PENDING and record.holder is None and record.unroutable_reason is not None
    )


def _noted(notes: tuple[DeclineNote, ...], note: DeclineNote, live: set[str]) -> tuple[DeclineNote, ...]:
    """``notes`` with ``note`` (an agent's latest decline) counted in; beyond ``MAX_DECLINES_KEPT``
    the notes of agents no longer ``live`` are forgotten first, then the oldest."""
    before = next((n for n in notes if n.agent == note.agent), None)
    if before is not None:
        total = (before.spent or Usage()) + (note.usage or Usage())
        note = note.model_copy(update={"count": before.count + 1, "spent": total or None})
    others = [n for n in notes if n.agent != note.agent]
    while len(others) >= MAX_DECLINES_KEPT:
        gone = next((n for n in others if n.agent not in live), others[0])
        others.remove(gone)
    return (*others, note)


def _unroutable(record: TaskRecord, cards: list[AgentCard]) -> dict[str, object]:
    """The record fields that say why nobody will take ``record``'s task (none when somebody will)."""
    because = matching.declined_by_all(cards, record)
    return {} if because is None else {"unroutable": because[0], "unroutable_reason": because[1]}
