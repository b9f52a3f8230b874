"""Claiming and holding: the one CAS that makes an agent a task's holder, and keeping it alive.

An agent claims through the task's *ticket* (``take``) and holds the delivery un-acked while it
works: the ticket's ack wait is the lease, ``in_progress`` the heartbeat, and the server
redelivering the ticket the expiry. The record names the ticket, so whoever receives it next
knows the old holder's lease ran out and takes over in the same CAS. A direct ``claim``, which
holds no ticket, keeps its lease as the key ``ants_leases/<task id>.<agent id>`` with a per-key
TTL: a key of the holder's own, so that where access control is on nobody else can write it (or
forge its expiry), and the record's CAS alone decides who holds the task.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from nats.aio.msg import Msg
from pydantic import JsonValue

from .._store import Conflict, Entry, translate_errors
from ..errors import LeaseLost, ServerUnavailable, TaskNotFound
from ..log import get_logger
from ..models import (
    Attempt,
    LeaseRecord,
    TaskRecord,
    TaskStatus,
    Ticket,
    TrailEvent,
    parse_or_none,
    utcnow,
    wire_bytes,
)
from ..names import LEASES_BUCKET, lease_key
from ._core import Core, check_id
from .lease import Lease, NotTaken, caps, claimed, expire, holds
from .propagate import Propagation
from .recover import Recovery

log = get_logger("board")

_CLOCK_SKEW_S = 2.0
"""Tolerance between this host's clock and the server's when judging a lease's age."""


class Claims:
    """Claims on one board's tasks."""

    def __init__(self, core: Core, propagation: Propagation, recovery: Recovery) -> None:
        self._core = core
        self._propagation = propagation
        self._recovery = recovery

    async def _claimable(self, record: TaskRecord, agent_id: str, *, probation: bool) -> NotTaken | None:
        """Why ``agent_id`` may not claim the task of ``record`` at all (None: it may try)."""
        task_id = record.task.id
        if record.status.terminal:
            await self._recovery.recover(record, by=agent_id)
            return NotTaken(task_id, "finished", status=record.status)
        if record.waiting_on:
            return NotTaken(task_id, "not_ready")
        now = utcnow()
        if record.status is TaskStatus.WAITING_INPUT:
            return await self._still_waiting(record, now, agent_id)
        if record.task.not_before is not None and now < record.task.not_before:
            return NotTaken(task_id, "not_yet", retry_after=(record.task.not_before - now).total_seconds())
        if record.task.deadline is not None and now > record.task.deadline:
            reason = "deadline passed before a claim"
            final = await self._propagation.finish_unclaimed(
                task_id, TaskStatus.FAILED, reason, event="task.failed", by=agent_id
            )
            return NotTaken(task_id, "finished", status=final.status)
        if record.task.budget is not None:
            spent = await self._core.budgets.spent_for(record, signed=self._core.signed)
            if spent is not None:
                final = await self._propagation.finish_unclaimed(
                    task_id, TaskStatus.FAILED, spent, event="task.failed", by=agent_id
                )
                return NotTaken(task_id, "finished", status=final.status)
        distrusted = await self._core.reputation.quarantined(agent_id, record.task.requires)
        # Probation never spends a task's last attempt on an agent we do not trust.
        last_chance = record.counted_attempts + 1 >= record.task.max_attempts
        if distrusted and (not probation or last_chance):
            return NotTaken(task_id, "quarantined", quarantined=tuple(distrusted))
        return None

    async def _still_waiting(self, record: TaskRecord, now: datetime, agent_id: str) -> NotTaken:
        """A task waiting for input: held back until its question times out, then failed."""
        task_id, question = record.task.id, record.questions[-1]
        if now < question.until:
            return NotTaken(task_id, "waiting", retry_after=(question.until - now).total_seconds())
        reason = f"no answer to {question.text!r} by {question.until.isoformat()}"
        final = await self._propagation.finish_unclaimed(
            task_id,
            TaskStatus.FAILED,
            reason,
            event="task.failed",
            by=agent_id,
            still=lambda fresh: (
                fresh.status is TaskStatus.WAITING_INPUT and fresh.questions == record.questions
            ),
        )
        if final.status.terminal:
            return NotTaken(task_id, "finished", status=final.status)
        return NotTaken(task_id, "duplicate")  # answered meanwhile: its fresh ticket is on its way

    async def take(
        self, ticket: Ticket, msg: Msg, agent_id: str, *, probation: bool = False, trust_ticket: bool = True
    ) -> Lease | NotTaken:
        """See ``TaskBoard.take``."""
        core, task_id = self._core, ticket.task_id
        check_id(agent_id, what="agent id")
        seq = msg.metadata.sequence.stream
        known = await self._first_look(ticket, trust_ticket and msg.metadata.num_delivered == 1)
        if isinstance(known, NotTaken):
            return known
        vetted = False  # whether ``_claimable`` passed (rechecked if the task ends or waits meanwhile)
        while True:
            from_ticket = known is not None
            if known is not None:
                record, revision = known
                known = None
            else:
                try:
                    record, revision = await core.get_entry(task_id)
                except TaskNotFound:
                    return NotTaken(task_id, "unknown")
            if (
                not vetted
                or record.status.terminal
                or record.waiting_on
                or record.status is TaskStatus.WAITING_INPUT
            ):
                refused = await self._claimable(record, agent_id, probation=probation)
                if refused is not None:
                    return refused
                vetted = True
            now = utcnow()
            if from_ticket and core.config.claim_after:
                # The announcer's own record, first delivery: start at once, write the claim later.
                return self._lease(record, revision, agent_id, token=revision, ticket=msg, claimed=False)
            expired: Attempt | None = None
            if record.status is TaskStatus.CLAIMED:
                if record.ticket is None:
                    # A direct claim, kept alive by its lease key: it expired only if the key is gone.
                    held = await self._lease_key_stands(task_id, record.holder)
                    if held is not None:
                        return held
                elif record.ticket != seq:
                    return NotTaken(task_id, "duplicate", holder=record.holder)
                # The server delivered the holder's own ticket to us: its lease ran out.
                record, expired = expire(record, now)
            new = record
            if record.status is not TaskStatus.DEAD:
                new = claimed(
                    record, agent_id, token=revision, now=now, ticket=seq, key=core.key_of(agent_id)
                )
            new = new.model_copy(update={"updated_at": now})
            try:
                written = await core.write(new, last=revision, by=agent_id)
            except Conflict:
                continue  # someone wrote meanwhile: judge the fresh record
            if expired is not None:
                await self._recovery.expired(new, expired, noticed_by=agent_id)
            if new.status is TaskStatus.DEAD:
                return NotTaken(task_id, "finished", status=new.status)
            announced = await self._claimed_event(new)
            if record.unroutable_reason is not None:  # taken after all (a "not now" lapsed)
                await core.drop_unroutable(task_id)
            lease = self._lease(new, written, agent_id, token=revision, ticket=msg, started_at=now)
            lease.announced = announced
            return lease

    async def _first_look(self, ticket: Ticket, fresh: bool) -> tuple[TaskRecord, int] | NotTaken | None:
        """On a ticket's first delivery, the ready record it announces, to claim without reading
        (on a signed board, the record read and judged)."""
        if not fresh:
            return None
        core, task_id = self._core, ticket.task_id
        if not core.signed:
            return _carried(ticket)
        # What a ticket carries is nobody's signed word that it is the record stored at that
        # revision: a signed board reads (and judges) the record instead.
        try:
            record, revision = await core.get_entry(task_id)
        except TaskNotFound:
            return NotTaken(task_id, "unknown")
        return (record, revision) if record.ready else None

    def _lease(
        self,
        record: TaskRecord,
        revision: int,
        agent_id: str,
        *,
        token: int,
        ticket: Msg | None,
        claimed: bool = True,
        started_at: datetime | None = None,
        lease_revision: int = 0,
    ) -> Lease:
        now = started_at or utcnow()
        ttl = self._core.config.lease_ttl
        return Lease(
            record.task,
            token,
            agent_id,
            ttl,
            now + timedelta(seconds=ttl),
            _record=record,
            _revision=revision,
            _ticket=ticket,
            _lease_revision=lease_revision,
            claimed=claimed,
            started_at=now,
        )

    async def confirm(self, lease: Lease) -> None:
        """See ``TaskBoard.confirm``."""
        if lease.claimed:
            return
        seq = lease._ticket.metadata.sequence.stream if lease._ticket is not None else None

        def claim(record: TaskRecord) -> TaskRecord | None:
            if not holds(lease, record):
                raise LeaseLost(
                    f"task {lease.task_id!r} was claimed by another; token {lease.token} is stale"
                )
            if record.status is TaskStatus.CLAIMED:
                return None  # an earlier confirm, cancelled after its write landed, wrote it
            return claimed(
                record,
                lease.agent_id,
                token=lease.token,
                now=lease.started_at,
                ticket=seq,
                key=self._core.key_of(lease.agent_id),
            )

        lease._record, lease._revision = await self._core.mutate(
            lease.task_id, claim, known=(lease._record, lease._revision), by=lease.agent_id
        )
        lease.claimed = True
        lease.announced = await self._claimed_event(lease._record)

    async def claim(self, task_id: str, agent_id: str, *, probation: bool = False) -> Lease | NotTaken:
        """See ``TaskBoard.claim``."""
        core = self._core
        check_id(task_id)
        check_id(agent_id, what="agent id")
        try:
            record, revision = await core.get_entry(task_id)
        except TaskNotFound:
            return NotTaken(task_id, "unknown")
        refused = await self._claimable(record, agent_id, probation=probation)
        if refused is not None:
            return refused
        if record.status is TaskStatus.CLAIMED and record.ticket is not None:
            # Held through its ticket: only the ticket's redelivery says that lease ran out.
            return NotTaken(task_id, "held", holder=record.holder, retry_after=core.config.lease_ttl)
        lapsed = None
        if record.status is TaskStatus.CLAIMED:
            # Held directly: alive while its holder's own lease key lives.
            held = await self._lease_key_stands(task_id, record.holder)
            if held is not None:
                return held
            lapsed = (record.holder, record.token)

        now, ttl, token = utcnow(), core.config.lease_ttl, revision
        lease_value = LeaseRecord(task_id=task_id, agent=agent_id, ttl=ttl, claimed_at=now, token=token)
        # Our own key (nobody else writes it): the record's CAS below decides between claimants.
        lease_revision = await core.leases.put(lease_key(task_id, agent_id), wire_bytes(lease_value), ttl=ttl)

        expired: Attempt | None = None

        def take(record: TaskRecord) -> TaskRecord | None:
            nonlocal expired
            expired = None
            if record.status.terminal or record.ticket is not None:
                return None  # finished, or claimed through a ticket, since we looked
            if record.status is TaskStatus.CLAIMED:
                if (record.holder, record.token) != lapsed:
                    return None  # claimed by someone else since we looked
                record, expired = expire(record, now)  # its holder's lease key is gone
                if record.status is TaskStatus.DEAD:
                    return record
            return claimed(record, agent_id, token=token, now=now, ticket=None, key=core.key_of(agent_id))

        final, written = await core.mutate(task_id, take, known=(record, revision), by=agent_id)
        if expired is not None:
            await self._recovery.expired(final, expired, noticed_by=agent_id)
        if final.status is not TaskStatus.CLAIMED or final.token != token or final.holder != agent_id:
            await self.drop_lease(task_id, agent_id, lease_revision)
            if final.status is TaskStatus.CLAIMED:
                return NotTaken(task_id, "held", holder=final.holder, retry_after=ttl)
            return NotTaken(task_id, "finished", status=final.status)
        announced = await self._claimed_event(final)
        lease = self._lease(
            final, written, agent_id, token=token, ticket=None, started_at=now, lease_revision=lease_revision
        )
        lease.announced = announced
        return lease

    async def _claimed_event(self, record: TaskRecord) -> bool:
        """Lay ``task.claimed`` for the claim ``record`` was written with; whether the trail took it
        (if not, the claim's outcome says so: see ``claim_facts``). The claim stands either way."""
        data: JsonValue = {**caps(record), "attempt": len(record.attempts) + 1}
        try:
            await self._core.event(
                "task.claimed", record.task.id, agent=record.holder, token=record.token, data=data
            )
        except ServerUnavailable as exc:
            log.warning(
                "task.claim_event_unsent", task_id=record.task.id, agent=record.holder, error=str(exc)
            )
            return False
        return True

    async def _lease_key_stands(self, task_id: str, holder: str | None) -> NotTaken | None:
        """``held`` while the lease key of ``holder``'s direct claim lives; None once it is gone."""
        core = self._core
        if holder is None:
            return None
        key = lease_key(task_id, holder)
        entry, deleted = await core.leases.read(key)
        if entry is None:
            return None if deleted is None else await self._deleted_early(task_id, holder, deleted)
        lease = parse_or_none(LeaseRecord, entry.value, where=f"{LEASES_BUCKET}/{key}")
        # The server's write time, not anything in the value, says how old the lease is.
        age = (utcnow() - (entry.time or utcnow())).total_seconds()
        if lease is None or age > 2 * core.config.lease_ttl + _CLOCK_SKEW_S:
            # Garbage, or a lease written without a TTL that the server would have expired long
            # ago: no honest holder wrote it, so it must not block the task forever.
            await self.drop_lease(task_id, holder, entry.revision)
            log.warning("lease.corrupt", task_id=task_id, revision=entry.revision, age=age)
            await core.trail.emit(
                TrailEvent(kind="corrupt.lease", ref=task_id, data={"revision": entry.revision, "age": age})
            )
            return NotTaken(task_id, "held", retry_after=0.0)
        return NotTaken(
            task_id, "held", holder=lease.agent, retry_after=max(core.config.lease_ttl - age, 0.0)
        )

    async def _deleted_early(self, task_id: str, holder: str, deleted: datetime) -> NotTaken | None:
        """``held`` when ``holder``'s lease key was ``deleted`` before its lease ran out: not the
        server's expiry but a tombstone or marker anyone may write (the holder drops its key only
        after its final write, when the record no longer names it). None when the lease really
        lapsed, or when the bucket no longer keeps the lease's last value to tell."""
        core, key = self._core, lease_key(task_id, holder)
        kept = await core.leases.history(key)
        if kept and kept[-1].time is not None and kept[-1].time > deleted:
            # Put back by its holder since (its heartbeat found the record still its own).
            return NotTaken(task_id, "held", holder=holder, retry_after=core.config.lease_ttl)
        last = parse_or_none(LeaseRecord, kept[-1].value, where=f"{LEASES_BUCKET}/{key}") if kept else None
        if last is None or kept[-1].time is None:
            return None
        runs_out = kept[-1].time + timedelta(seconds=last.ttl)
        if deleted >= runs_out:
            return None
        record, _ = await core.get_entry(task_id)
        if record.holder != holder or record.token != last.token:
            return None  # its holder finished (or let go) and dropped its key meanwhile
        log.warning("lease.forged_expiry", task_id=task_id, holder=holder, deleted=deleted.isoformat())
        await core.trail.emit(
            TrailEvent(kind="corrupt.lease", ref=task_id, data={"holder": holder, "deleted_early": True})
        )
        return NotTaken(task_id, "held", holder=holder, retry_after=(runs_out - deleted).total_seconds())

    async def drop_lease(self, task_id: str, agent_id: str, revision: int) -> None:
        """Delete ``agent_id``'s lease key on ``task_id`` at ``revision`` (its tombstone expires
        after a TTL)."""
        # Conflict: already expired or replaced, so nothing of ours is left to remove.
        with contextlib.suppress(Conflict):
            key, ttl = lease_key(task_id, agent_id), self._core.config.lease_ttl
            await self._core.leases.delete(key, last=revision, ttl=ttl)

    async def check_lease_key(self, lease: Lease) -> None:
        """For a direct claim: ``LeaseLost`` unless its lease key still holds its token (then the
        key's revision is noted for the drop that follows)."""
        entry = await self._core.leases.get(lease_key(lease.task_id, lease.agent_id))
        token = None if entry is None else _lease_token(entry)
        if entry is None or token != lease.token:
            raise LeaseLost(f"lease on {lease.task_id!r} (token {lease.token}) is no longer held")
        lease._lease_revision = entry.revision

    async def heartbeat(self, lease: Lease) -> None:
        """See ``TaskBoard.heartbeat``."""
        core = self._core
        await self.confirm(lease)
        now = utcnow()
        if lease._ticket is not None:
            record, revision = await core.get_entry(lease.task_id)
            if not holds(lease, record):
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            lease._record, lease._revision = record, revision
            async with translate_errors(f"extend the ticket of {lease.task_id}"):
                await lease._ticket.in_progress()
        else:
            # The record, not the key, says who holds the task: a claimant that took over (or a
            # cancel) leaves our own key untouched.
            record, _ = await core.get_entry(lease.task_id)
            if not holds(lease, record):
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            value = LeaseRecord(
                task_id=lease.task_id, agent=lease.agent_id, ttl=lease.ttl, claimed_at=now, token=lease.token
            )
            key = lease_key(lease.task_id, lease.agent_id)
            try:
                lease._lease_revision = await core.leases.update(
                    key, wire_bytes(value), last=lease._lease_revision, ttl=lease.ttl
                )
            except Conflict:
                lease._lease_revision = await self._restore_lease(lease, key, wire_bytes(value))
        lease.expires_at = now + timedelta(seconds=lease.ttl)
        await core.event("task.heartbeat", lease.task_id, agent=lease.agent_id, token=lease.token)

    async def _restore_lease(self, lease: Lease, key: str, value: bytes) -> int:
        """Put back a direct claim's lease key that someone deleted (or that lapsed) while the
        record still names this holder with this token: nobody has taken over, so the claim
        stands. ``LeaseLost`` once someone has."""
        record, _ = await self._core.get_entry(lease.task_id)
        lost = LeaseLost(f"lease on {lease.task_id!r} (token {lease.token}) expired or was taken")
        if not holds(lease, record):
            raise lost
        try:
            revision = await self._core.leases.create(key, value, ttl=lease.ttl)
        except Conflict as exc:
            raise lost from exc
        # A claimant that saw the key gone may have taken over meanwhile: then ours goes again.
        record, _ = await self._core.get_entry(lease.task_id)
        if not holds(lease, record):
            await self.drop_lease(lease.task_id, lease.agent_id, revision)
            raise lost
        log.warning("lease.restored", task_id=lease.task_id, agent=lease.agent_id, token=lease.token)
        return revision


def _lease_token(entry: Entry) -> int | None:
    """Token a lease key keeps alive (None when its value is garbage)."""
    lease = parse_or_none(LeaseRecord, entry.value, where=f"{LEASES_BUCKET}/{entry.key}")
    return None if lease is None else lease.token


def _carried(ticket: Ticket) -> tuple[TaskRecord, int] | None:
    """The ready record of ``ticket``'s task and its revision, as the ticket carries them (if it does)."""
    record, revision = ticket.record, ticket.revision
    if record is None or revision is None or not record.ready or record.task.id != ticket.task_id:
        return None
    return record, revision
