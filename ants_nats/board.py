"""The task board: claim-and-lock with server-expiring leases and fencing tokens on JetStream KV.

Protocol (every decision is a single compare-and-set write; there is no coordinator):

* A task's state lives in ``ants_tasks/<id>``. A claim is a CAS of that record from ``pending`` to
  ``claimed``; the **fencing token** is the record revision the claim was based on, so tokens grow
  with every claim of a task and a holder's later writes (CAS on the revision it wrote) fail once
  anyone else has claimed.
* The lease that keeps a claim alive lives on the server. An agent claims through the task's
  *ticket* (see ``_tickets``) and holds it un-acked while it works: the ticket's ack wait is the
  lease, ``in_progress`` the heartbeat, and the server redelivering the ticket the expiry. The
  record names the ticket (``ticket``), so whoever receives it next knows the old holder's lease
  ran out, counts the expired attempt and takes over (or dead-letters the task after
  ``max_attempts``). A direct ``claim(task_id, agent)``, which holds no ticket, keeps its lease as
  ``ants_leases/<id>``, a key with a per-key TTL that its heartbeats renew.
* Dependencies: a record lists the dependencies it still ``waits_on`` and its ``dependents``. The
  agent that completes a task removes it from each dependent (CAS); whoever empties the list
  publishes the dependent's ticket. A failed or dead task fails its dependents with a reason.
* Every change leaves an event on the trail, after the CAS that made it true. Outcomes (completed,
  failed, expired, dead, blocked, released, declined) wait for the stream's ack, and a ticket is
  acked only after them, so a crash in between is repaired by the next agent that meets the
  ticket; progress-like events (submitted, ready, claimed, heartbeat, progress) are sent without
  waiting for an ack: one message each instead of two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import JsonValue

from . import _tickets, matching
from ._aio import gather_bounded
from ._connect import connect
from ._store import Bucket, Conflict, Entry, ensure_kv, translate_errors, watch_values
from .cards import Directory
from .dag import check_batch
from .errors import (
    AntsError,
    CorruptEntry,
    InvalidTask,
    LeaseLost,
    PayloadTooLarge,
    TaskExists,
    TaskNotFound,
    UnknownDependency,
)
from .identity import Identity
from .log import get_logger
from .models import (
    Attempt,
    LeaseRecord,
    Outcome,
    Task,
    TaskRecord,
    TaskStatus,
    Ticket,
    TrailEvent,
    parse_or_none,
    utcnow,
    wire_bytes,
)
from .names import BAD_RESULT_MARK, LEASES_BUCKET, LEDGER_BUCKET, TASKS_BUCKET, is_valid_id
from .reputation import Reputation, ReputationConfig
from .trail import Trail, TrailConfig

log = get_logger("board")

_ONCE_PER_LEASE = frozenset(
    {"task.claimed", "task.completed", "task.failed", "task.expired", "task.released", "task.declined"}
)
_ONCE_PER_TASK = frozenset({"task.submitted", "task.dead"})
_UNCONFIRMED = frozenset(
    {"task.submitted", "task.unroutable", "task.ready", "task.claimed", "task.heartbeat", "task.progress"}
)
"""Events sent without waiting for the stream's ack (their loss costs nothing the board needs)."""

_CLOCK_SKEW_S = 2.0
"""Tolerance between this host's clock and the server's when judging a lease's age."""

_CARDS_MAX_AGE_S = 1.0
"""How long a submitter reuses the cards it read to tell whether a task is routable."""


@dataclass(frozen=True)
class BoardConfig:
    """Settings every agent of one board should share."""

    lease_ttl: float = 30.0
    """Seconds a claim lives without a heartbeat before the server expires it."""
    replicas: int = 1
    """Replicas of the buckets and the work stream (3 on a 3-node cluster)."""
    max_payload_bytes: int = 64 * 1024
    """Largest accepted task payload, and task result, as JSON."""
    task_history: int = 5
    """Revisions kept per task key (inspect them with ``nats kv history``)."""
    card_ttl: float = 10.0
    """Seconds an agent card lives without a fresh announcement (agents announce every TTL/3)."""
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    """How reputation gates claims (quarantine, probation, preference)."""
    claim_after: float = 0.25
    """Seconds a handler runs before the agent writes its claim to the record. A task finished
    sooner goes from ``pending`` to its outcome in one write; 0 writes every claim at once."""

    def __post_init__(self) -> None:
        # The server rejects per-message TTLs under one second.
        for name in ("lease_ttl", "card_ttl"):
            if getattr(self, name) < 1.0:
                raise AntsError(f"BoardConfig.{name} must be at least 1 second")
        if not 0.0 <= self.claim_after < self.lease_ttl / 3:
            raise AntsError("BoardConfig.claim_after must be at least 0 and less than lease_ttl / 3")
        if self.replicas not in (1, 3, 5):
            raise AntsError("BoardConfig.replicas must be 1, 3 or 5")


@dataclass
class Lease:
    """A held claim on a task. ``token`` is the fencing token: the record revision the claim was
    based on, larger for every later claim of the same task.

    A claim through a ticket may be *deferred*: the handler starts at once and the claim is
    written only if it still runs after ``BoardConfig.claim_after`` (or on ``confirm``). Until then
    ``claimed`` is False, the record reads ``pending``, and the token is provisional: the board
    fences every write with it exactly, but a handler that hands the token to another system
    should ``await board.confirm(lease)`` (``ctx.confirm()``) first.
    """

    task: Task
    token: int
    agent_id: str
    ttl: float
    expires_at: datetime
    _record: TaskRecord = field(repr=False)
    """The record as this holder last wrote or checked it, and its revision: the next CAS's base."""
    _revision: int = field(repr=False)
    _ticket: Msg | None = field(default=None, repr=False)
    """The ticket whose un-acked delivery is this claim's lease (None: a lease key instead)."""
    _lease_revision: int = field(default=0, repr=False)
    """With a lease key: its last revision (heartbeats CAS on it)."""
    claimed: bool = True
    """Whether the claim is written to the record (False while deferred)."""
    started_at: datetime = field(default_factory=utcnow)
    """When the claim began (the attempt's start)."""

    @property
    def task_id(self) -> str:
        """Id of the claimed task."""
        return self.task.id


@dataclass(frozen=True)
class Taken:
    """The definite answer of a claim that did not win.

    ``reason``: ``held`` (another agent holds a live lease; retry after ``retry_after`` s),
    ``finished`` (the task is done, failed or dead; ``status`` says which), ``not_ready``
    (dependencies are not done yet), ``unknown`` (no such task), ``quarantined`` (the claimant's
    reputation for a required capability is too low, and the claim was not on probation) or
    ``duplicate`` (a second ticket for a task that its holder's own ticket keeps alive).
    """

    task_id: str
    reason: Literal["held", "finished", "not_ready", "unknown", "quarantined", "duplicate"]
    holder: str | None = None
    retry_after: float | None = None
    status: TaskStatus | None = None
    quarantined: tuple[str, ...] = ()
    """With reason ``quarantined``: the capabilities the claimant is not trusted with right now."""


def _json_size(value: JsonValue) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _parse_watched(key: str, value: bytes) -> TaskRecord | None:
    return parse_or_none(TaskRecord, value, where=f"{TASKS_BUCKET}/{key}")


class TaskBoard:
    """The shared task board. Open it with ``TaskBoard.connect(url)`` or ``await TaskBoard.open(nc)``."""

    def __init__(self, nc: Client, js: JetStreamContext, config: BoardConfig) -> None:
        self.nc = nc
        self.config = config
        self._js = js
        self.tasks = Bucket(js, TASKS_BUCKET)
        self.leases = Bucket(js, LEASES_BUCKET)
        self.routes = _tickets.Routes(js, replicas=config.replicas, lease_ttl=config.lease_ttl)
        self.trail = Trail(js, TrailConfig(replicas=config.replicas))
        """The trail every state change of this board is written to."""
        self.directory = Directory(nc, replicas=config.replicas, card_ttl=config.card_ttl)
        """Live agent cards: who can do what right now."""
        self.reputation = Reputation(nc, config.reputation)
        """Scores read from the ledger; every claim through this board checks them."""
        self._identities: dict[str, Identity] = {}

    @classmethod
    async def open(cls, nc: Client, config: BoardConfig | None = None) -> TaskBoard:
        """Bind to the board on an open connection, creating buckets and streams if missing."""
        config = config or BoardConfig()
        js = nc.jetstream()
        board = cls(nc, js, config)
        await board._ensure()
        return board

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, config: BoardConfig | None = None, *, name: str = "ants-nats", seed: str | None = None
    ) -> AsyncGenerator[TaskBoard, None]:
        """Connect to ``url`` (as nkeys user ``seed``, if given), open the board, and close the
        connection on exit."""
        async with connect(url, name=name, seed=seed) as nc:
            yield await cls.open(nc, config)

    async def _ensure(self) -> None:
        js = self._js
        replicas = self.config.replicas
        await ensure_kv(js, TASKS_BUCKET, replicas=replicas, history=self.config.task_history)
        await ensure_kv(
            js, LEASES_BUCKET, replicas=replicas, history=1, marker_ttl=max(self.config.lease_ttl, 1.0)
        )
        await self.routes.ensure()
        await self.trail.ensure()
        await self.directory.ensure()
        await ensure_kv(js, LEDGER_BUCKET, replicas=replicas, history=1)

    def sign_as(self, agent_id: str, identity: Identity) -> None:
        """Sign the events this board lays on behalf of ``agent_id`` with ``identity``."""
        self._identities[agent_id] = identity

    async def _event(
        self,
        kind: str,
        task_id: str,
        *,
        agent: str | None = None,
        token: int | None = None,
        data: JsonValue = None,
        by: str | None = None,
    ) -> None:
        """Log a state change and leave it on the trail (after the CAS that made it true).

        The event is signed by the agent that caused it (``by``, else ``agent``) when this board
        holds that agent's identity. Events that happen once per task or per lease carry a message
        id, so a repair racing the original writer (``_recover``) cannot record them twice.
        """
        log.info(kind, task_id=task_id, agent=agent, token=token)
        emitter = by or agent
        signer = self._identities.get(emitter) if emitter else None
        event = TrailEvent(
            kind=kind, ref=task_id, agent=agent, token=token, data=data, by=emitter if signer else None
        )
        msg_id = None
        if kind in _ONCE_PER_LEASE:
            msg_id = f"{kind}-{task_id}-{token}"
        elif kind in _ONCE_PER_TASK:
            msg_id = f"{kind}-{task_id}"
        if kind in _UNCONFIRMED:
            await self.trail.emit_nowait(event, signer=signer, msg_id=msg_id)
        else:
            await self.trail.emit(event, signer=signer, msg_id=msg_id)

    # ----------------------------------------------------------------- reading

    async def get(self, task_id: str) -> TaskRecord:
        """The current record of ``task_id``; ``TaskNotFound`` if there is none."""
        _check_id(task_id)
        return (await self._get_entry(task_id))[0]

    async def _get_entry(self, task_id: str) -> tuple[TaskRecord, int]:
        entry = await self.tasks.get(task_id)
        if entry is None:
            raise TaskNotFound(f"no task {task_id!r} on the board")
        record = parse_or_none(TaskRecord, entry.value, where=f"{TASKS_BUCKET}/{task_id}")
        if record is None or record.task.id != task_id:
            return await self._restore(task_id, entry.revision)
        return record, entry.revision

    async def _restore(self, task_id: str, bad_revision: int) -> tuple[TaskRecord, int]:
        """Put back the last valid revision of a record someone overwrote with garbage.

        No honest writer produces an invalid record, so the key's history (``task_history``
        revisions) still holds the true state. The repair is a CAS on the bad revision and is
        recorded on the trail as ``corrupt.task``.
        """
        for entry in reversed(await self.tasks.history(task_id)):
            record = parse_or_none(
                TaskRecord, entry.value, where=f"{TASKS_BUCKET}/{task_id}@{entry.revision}"
            )
            if record is not None and record.task.id == task_id:
                break
        else:
            raise CorruptEntry(f"{TASKS_BUCKET}/{task_id} holds no valid revision to restore")
        try:
            revision = await self.tasks.update(task_id, wire_bytes(record), last=bad_revision)
        except Conflict:
            return await self._get_entry(task_id)  # someone wrote (or restored) it meanwhile
        log.warning("task.restored", task_id=task_id, bad_revision=bad_revision, restored=entry.revision)
        await self.trail.emit(
            TrailEvent(
                kind="corrupt.task",
                ref=task_id,
                data={"bad_revision": bad_revision, "restored_revision": entry.revision},
            )
        )
        return record, revision

    async def all_tasks(self) -> list[TaskRecord]:
        """Every task on the board (one pass over the bucket; corrupt values are logged and skipped)."""
        records: list[TaskRecord] = []
        async for key, value in watch_values(self._js, TASKS_BUCKET, history_only=True):
            record = _parse_watched(key, value)
            if record is not None:
                records.append(record)
        return records

    async def watch(self) -> AsyncGenerator[TaskRecord, None]:
        """Every task's current record, then every change as it happens (no polling)."""
        async for key, value in watch_values(self._js, TASKS_BUCKET):
            record = _parse_watched(key, value)
            if record is not None:
                yield record

    async def wait(self, task_ids: Iterable[str], timeout: float | None = None) -> dict[str, TaskRecord]:
        """Wait until every task in ``task_ids`` is terminal; ``TimeoutError`` after ``timeout`` s."""
        wanted = set(task_ids)
        final: dict[str, TaskRecord] = {}

        async def consume() -> None:
            async with aclosing(self.watch()) as records:
                async for record in records:
                    if record.task.id in wanted and record.status.terminal:
                        final[record.task.id] = record
                    if wanted <= final.keys():
                        return

        if wanted:
            async with asyncio.timeout(timeout):
                await consume()
        return final

    # ----------------------------------------------------------------- submitting

    async def submit(self, task: Task | Mapping[str, Any]) -> TaskRecord:
        """Submit one task. See ``submit_many``."""
        return (await self.submit_many([task]))[0]

    async def submit_many(self, tasks: Sequence[Task | Mapping[str, Any]]) -> list[TaskRecord]:
        """Submit a batch of tasks (a DAG may span the batch and tasks already on the board).

        Everything is validated before anything is announced: malformed fields (``InvalidTask``),
        oversized payloads (``PayloadTooLarge``), duplicate ids or ids on the board with another
        definition (``TaskExists``), unknown dependencies (``UnknownDependency``) and cycles
        (``DependencyCycle``). A rejected batch leaves nothing on the board.

        Submitting is idempotent by task id: a task already on the board with the same definition
        is accepted as it is, and whatever a failed earlier submission left undone (announcing it,
        linking it to its dependencies, its trail event) is completed. So a caller that lost the
        answer to a submission, or crashed during it, can simply submit again.

        Writes are pipelined (up to 256 in flight), so a large batch costs about one round trip
        per 256 tasks rather than several per task.
        """
        batch = [_parse_task(task) for task in tasks]
        for task in batch:
            size = _json_size(task.payload)
            if size > self.config.max_payload_bytes:
                raise PayloadTooLarge(f"payload of task {task.id!r}", size, self.config.max_payload_bytes)
        check_batch(batch)
        ids = {task.id for task in batch}
        external = sorted({dep for task in batch for dep in task.depends_on if dep not in ids})
        for dep, entry in zip(
            external, await gather_bounded(self.tasks.get(d) for d in external), strict=True
        ):
            if entry is None:
                raise UnknownDependency(f"dependency {dep!r} is not on the board nor in the submission")

        dependents: dict[str, list[str]] = {task.id: [] for task in batch}
        for task in batch:
            for dep in task.depends_on:
                if dep in dependents:
                    dependents[dep].append(task.id)
        unroutable = await self._unroutable(batch)
        records = {
            task.id: TaskRecord(
                task=task,
                status=TaskStatus.PENDING,
                waiting_on=task.depends_on,
                dependents=tuple(sorted(dependents[task.id])),
                unroutable=unroutable.get(task.id),
            )
            for task in batch
        }
        revisions = await gather_bounded(self._create(records[task.id]) for task in batch)
        written = {task.id: rev for task, rev in zip(batch, revisions, strict=True) if rev is not None}
        existing: set[str] = set()
        try:
            for task in batch:
                if task.id not in written:
                    if not await self._same_task_exists(task):
                        raise TaskExists(f"task {task.id!r} was submitted concurrently by someone else")
                    existing.add(task.id)
        except TaskExists:
            await self._withdraw(written)
            raise

        for requires, express in sorted({(task.requires, task.express) for task in batch}):
            await self.routes.register(requires, express=express)
        for task in batch:
            if task.id in written:
                await self._submitted(task)
                missing = records[task.id].unroutable
                if missing is not None:
                    log.warning("task.unroutable", task_id=task.id, missing=missing)
                    await self._event("task.unroutable", task.id, data={"missing": list(missing)})
            elif await self.trail.last("task.submitted", task.id) is None:
                await self._submitted(task)

        for task in batch:
            for dep in task.depends_on:
                if dep not in written or task.id in existing:
                    await self._attach_to_dependency(task.id, dep)  # announces it if now ready
        ready = [task for task in batch if task.id in written and not task.depends_on]
        # Their ``task.submitted`` says they are ready: no ``task.ready`` event of their own.
        await gather_bounded(self._announce(records[t.id], written[t.id], event=False) for t in ready)
        final = {task.id: records[task.id] for task in ready}
        for task in batch:
            if task.id in final:
                continue
            record, revision = await self._get_entry(task.id)  # dependencies may have changed it
            if task.id in existing and record.ready:
                await self._announce(record, revision)  # finishes an interrupted submission
            final[task.id] = record
        return [final[task.id] for task in batch]

    async def _create(self, record: TaskRecord) -> int | None:
        """Write a new record; its revision, or None when the id is taken."""
        try:
            return await self.tasks.create(record.task.id, wire_bytes(record))
        except Conflict:
            return None

    async def _withdraw(self, written: Mapping[str, int]) -> None:
        """Remove the records a rejected batch wrote before the rejection was known (nothing has
        announced them yet, so nobody else can have touched them)."""
        for task_id, revision in written.items():
            with contextlib.suppress(Conflict):
                await self.tasks.delete(task_id, last=revision)

    async def _unroutable(self, batch: Sequence[Task]) -> dict[str, tuple[str, ...]]:
        """The capabilities no live agent offers, for each task of ``batch`` that needs some.

        A recent reading of the cards is enough to see that a route is served; only a task that
        looks unroutable pays for a fresh reading."""
        cards = await self.directory.cards(max_age=_CARDS_MAX_AGE_S)
        if any(matching.unroutable(cards, task.requires) for task in batch):
            cards = await self.directory.cards()
        missing = {task.id: matching.unroutable(cards, task.requires) for task in batch}
        return {task_id: caps for task_id, caps in missing.items() if caps is not None}

    async def _same_task_exists(self, task: Task) -> bool:
        """False if ``task.id`` is free; True if the board holds this very task; else ``TaskExists``."""
        try:
            record = await self.get(task.id)
        except TaskNotFound:
            return False
        if record.task != task:
            raise TaskExists(f"task {task.id!r} is already on the board with a different definition")
        return True

    async def _submitted(self, task: Task) -> None:
        data: JsonValue = {
            "kind": task.kind,
            "requires": list(task.requires),
            "depends_on": list(task.depends_on),
            "ready": not task.depends_on,
        }
        await self._event("task.submitted", task.id, agent=task.created_by, data=data)

    async def _attach_to_dependency(self, task_id: str, dep: str) -> None:
        """Register ``task_id`` as a dependent of existing task ``dep``, or settle it if ``dep`` ended."""

        def add_dependent(record: TaskRecord) -> TaskRecord | None:
            if record.status.terminal:
                return None
            return record.model_copy(update={"dependents": tuple(sorted({*record.dependents, task_id}))})

        # A terminal dependency is returned unchanged, so its status tells how to settle ``task_id``.
        dep_record, _ = await self._mutate(dep, add_dependent)
        if dep_record.status is TaskStatus.DONE:
            await self._dependency_done(task_id, dep)
        elif dep_record.status.terminal:
            await self._block(task_id, dep, dep_record)

    # ----------------------------------------------------------------- CAS helper

    async def _mutate(
        self,
        task_id: str,
        change: Callable[[TaskRecord], TaskRecord | None],
        *,
        known: tuple[TaskRecord, int] | None = None,
    ) -> tuple[TaskRecord, int]:
        """Apply ``change`` to the record with CAS, re-reading and retrying when someone else wrote;
        returns the record and its revision.

        ``change`` returns the new record, or None to leave it as it is; it may raise to abort.
        ``known`` is a (record, revision) the caller just read or wrote: the first attempt writes
        on it without reading again (a conflict means a fresh read, as always).
        """
        while True:
            guessed = known is not None
            record, revision = known if known is not None else await self._get_entry(task_id)
            known = None
            new = change(record)
            if new is None:
                if guessed:
                    continue  # "nothing to do" is decided on a fresh read only
                return record, revision
            new = new.model_copy(update={"updated_at": utcnow()})
            try:
                revision = await self.tasks.update(task_id, wire_bytes(new), last=revision)
            except Conflict:
                continue
            return new, revision

    # ----------------------------------------------------------------- claiming

    async def _claimable(self, record: TaskRecord, agent_id: str, *, probation: bool) -> Taken | None:
        """Why ``agent_id`` may not claim the task of ``record`` at all (None: it may try)."""
        task_id = record.task.id
        if record.status.terminal:
            await self._recover(record, by=agent_id)
            return Taken(task_id, "finished", status=record.status)
        if record.waiting_on:
            return Taken(task_id, "not_ready")
        if record.task.deadline is not None and utcnow() > record.task.deadline:
            final = await self._finish_unclaimed(
                task_id, TaskStatus.FAILED, "deadline passed before a claim", event="task.failed"
            )
            return Taken(task_id, "finished", status=final.status)
        distrusted = await self.reputation.quarantined(agent_id, record.task.requires)
        # Probation never spends a task's last attempt on an agent we do not trust.
        last_chance = record.counted_attempts + 1 >= record.task.max_attempts
        if distrusted and (not probation or last_chance):
            return Taken(task_id, "quarantined", quarantined=tuple(distrusted))
        return None

    async def take(
        self, ticket: Ticket, msg: Msg, agent_id: str, *, probation: bool = False
    ) -> Lease | Taken:
        """Claim the task of ``ticket``, delivered as ``msg``, for ``agent_id``: the agent runtime's claim.

        The un-acked delivery of ``msg`` is the lease: the caller keeps it un-acked while it works
        (``heartbeat`` sends ``in_progress``) and acks it once the task is settled. On a first
        delivery the ticket's copy of the ready record is claimed with one CAS, without a read.
        """
        task_id = ticket.task_id
        _check_id(agent_id, what="agent id")
        seq, delivered = msg.metadata.sequence.stream, msg.metadata.num_delivered
        snapshot, revision = ticket.record, ticket.revision
        known = None
        if delivered == 1 and snapshot is not None and revision is not None and snapshot.ready:
            known = (snapshot, revision) if snapshot.task.id == task_id else None
        vetted = False  # whether ``_claimable`` passed (rechecked if the task ends or waits meanwhile)
        while True:
            from_ticket = known is not None
            if known is not None:
                record, revision = known
                known = None
            else:
                try:
                    record, revision = await self._get_entry(task_id)
                except TaskNotFound:
                    return Taken(task_id, "unknown")
            if not vetted or record.status.terminal or record.waiting_on:
                refused = await self._claimable(record, agent_id, probation=probation)
                if refused is not None:
                    return refused
                vetted = True
            now = utcnow()
            if from_ticket and self.config.claim_after:
                # The announcer's own record, first delivery: start at once, write the claim later.
                return self._lease(record, revision, agent_id, token=revision, ticket=msg, claimed=False)
            expired: Attempt | None = None
            if record.status is TaskStatus.CLAIMED:
                if record.ticket is None:
                    # A direct claim, kept alive by its lease key: it expired only if the key is gone.
                    held = await self._held(task_id)
                    if held is not None:
                        return held
                elif record.ticket != seq:
                    return Taken(task_id, "duplicate", holder=record.holder)
                # The server delivered the holder's own ticket to us: its lease ran out.
                record, expired = _expire(record, now)
            new = record
            if record.status is not TaskStatus.DEAD:
                new = _claimed(record, agent_id, token=revision, now=now, ticket=seq)
            new = new.model_copy(update={"updated_at": now})
            try:
                written = await self.tasks.update(task_id, wire_bytes(new), last=revision)
            except Conflict:
                continue  # someone wrote meanwhile: judge the fresh record
            if expired is not None:
                await self._expired(new, expired, noticed_by=agent_id)
            if new.status is TaskStatus.DEAD:
                return Taken(task_id, "finished", status=new.status)
            await self._claimed_event(new)
            return self._lease(new, written, agent_id, token=revision, ticket=msg, started_at=now)

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
        ttl = self.config.lease_ttl
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
        """Write a deferred claim now (a no-op once written): the record reads ``claimed``, and the
        token is final. ``LeaseLost`` if someone else claimed or finished the task meanwhile."""
        if lease.claimed:
            return
        seq = lease._ticket.metadata.sequence.stream if lease._ticket is not None else None

        def claim(record: TaskRecord) -> TaskRecord | None:
            if not _holds(lease, record):
                raise LeaseLost(
                    f"task {lease.task_id!r} was claimed by another; token {lease.token} is stale"
                )
            if record.status is TaskStatus.CLAIMED:
                return None  # an earlier confirm, cancelled after its write landed, wrote it
            return _claimed(record, lease.agent_id, token=lease.token, now=lease.started_at, ticket=seq)

        lease._record, lease._revision = await self._mutate(
            lease.task_id, claim, known=(lease._record, lease._revision)
        )
        lease.claimed = True
        await self._claimed_event(lease._record)

    async def claim(self, task_id: str, agent_id: str, *, probation: bool = False) -> Lease | Taken:
        """Try to claim ``task_id`` for ``agent_id`` directly: a ``Lease`` if this call won, else ``Taken``.

        A direct claim holds no ticket, so its lease is the key ``ants_leases/<task id>`` with a
        per-key TTL, renewed by ``heartbeat``. An agent quarantined for one of the task's
        capabilities is refused unless ``probation`` (the runtime sets it once a ticket has been
        offered ``probation_after`` times) and the task has more than one attempt left.
        """
        _check_id(task_id)
        _check_id(agent_id, what="agent id")
        try:
            record, revision = await self._get_entry(task_id)
        except TaskNotFound:
            return Taken(task_id, "unknown")
        refused = await self._claimable(record, agent_id, probation=probation)
        if refused is not None:
            return refused
        if record.status is TaskStatus.CLAIMED and record.ticket is not None:
            # Held through its ticket: only the ticket's redelivery says that lease ran out.
            return Taken(task_id, "held", holder=record.holder, retry_after=self.config.lease_ttl)

        now, ttl, token = utcnow(), self.config.lease_ttl, revision
        lease_value = LeaseRecord(task_id=task_id, agent=agent_id, ttl=ttl, claimed_at=now, token=token)
        try:
            lease_revision = await self.leases.create(task_id, wire_bytes(lease_value), ttl=ttl)
        except Conflict:
            return await self._held(task_id) or Taken(task_id, "held", retry_after=0.0)

        expired: Attempt | None = None

        def take(record: TaskRecord) -> TaskRecord | None:
            nonlocal expired
            expired = None
            if record.status.terminal or record.ticket is not None:
                return None  # finished, or claimed through a ticket, since we looked
            if record.status is TaskStatus.CLAIMED:
                # Our lease key create succeeded, so the previous holder's key is gone: it expired.
                record, expired = _expire(record, now)
                if record.status is TaskStatus.DEAD:
                    return record
            return _claimed(record, agent_id, token=token, now=now, ticket=None)

        final, written = await self._mutate(task_id, take, known=(record, revision))
        if expired is not None:
            await self._expired(final, expired, noticed_by=agent_id)
        if final.status is not TaskStatus.CLAIMED or final.token != token or final.holder != agent_id:
            await self._drop_lease(task_id, lease_revision)
            if final.status is TaskStatus.CLAIMED:
                return Taken(task_id, "held", holder=final.holder, retry_after=ttl)
            return Taken(task_id, "finished", status=final.status)
        await self._claimed_event(final)
        return self._lease(
            final, written, agent_id, token=token, ticket=None, started_at=now, lease_revision=lease_revision
        )

    async def _claimed_event(self, record: TaskRecord) -> None:
        data: JsonValue = {**_caps(record), "attempt": len(record.attempts) + 1}
        await self._event("task.claimed", record.task.id, agent=record.holder, token=record.token, data=data)

    async def _expired(self, record: TaskRecord, attempt: Attempt, *, noticed_by: str) -> None:
        """Record on the trail that ``attempt``'s lease ran out (and the task's death, if it died)."""
        task_id = record.task.id
        data: JsonValue = {**_caps(record), "noticed_by": noticed_by}
        await self._event(
            "task.expired", task_id, agent=attempt.agent, token=attempt.token, data=data, by=noticed_by
        )
        if record.status is TaskStatus.DEAD:
            await self._event("task.dead", task_id, data={"error": record.error})
            await self._propagate(record)

    async def _held(self, task_id: str) -> Taken | None:
        """``held`` while the lease key of a direct claim lives; None once it is gone."""
        entry = await self.leases.get(task_id)
        if entry is None:
            return None
        lease = parse_or_none(LeaseRecord, entry.value, where=f"{LEASES_BUCKET}/{task_id}")
        # The server's write time, not anything in the value, says how old the lease is.
        age = (utcnow() - (entry.time or utcnow())).total_seconds()
        if lease is None or age > 2 * self.config.lease_ttl + _CLOCK_SKEW_S:
            # Garbage, or a lease written without a TTL that the server would have expired long
            # ago: no honest holder wrote it, so it must not block the task forever.
            await self._drop_lease(task_id, entry.revision)
            log.warning("lease.corrupt", task_id=task_id, revision=entry.revision, age=age)
            await self.trail.emit(
                TrailEvent(kind="corrupt.lease", ref=task_id, data={"revision": entry.revision, "age": age})
            )
            return Taken(task_id, "held", retry_after=0.0)
        return Taken(task_id, "held", holder=lease.agent, retry_after=max(self.config.lease_ttl - age, 0.0))

    async def _drop_lease(self, task_id: str, revision: int) -> None:
        # Conflict: already expired or replaced, so nothing of ours is left to remove.
        with contextlib.suppress(Conflict):
            await self.leases.delete(task_id, last=revision, ttl=self.config.lease_ttl)

    # ----------------------------------------------------------------- holding

    async def heartbeat(self, lease: Lease) -> None:
        """Extend ``lease`` by a full TTL (writing a deferred claim first); ``LeaseLost`` if it
        expired or was replaced."""
        await self.confirm(lease)
        now = utcnow()
        if lease._ticket is not None:
            record, revision = await self._get_entry(lease.task_id)
            if not _holds(lease, record):
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            lease._record, lease._revision = record, revision
            async with translate_errors(f"extend the ticket of {lease.task_id}"):
                await lease._ticket.in_progress()
        else:
            value = LeaseRecord(
                task_id=lease.task_id, agent=lease.agent_id, ttl=lease.ttl, claimed_at=now, token=lease.token
            )
            try:
                lease._lease_revision = await self.leases.update(
                    lease.task_id, wire_bytes(value), last=lease._lease_revision, ttl=lease.ttl
                )
            except Conflict as exc:
                raise LeaseLost(
                    f"lease on {lease.task_id!r} (token {lease.token}) expired or was taken"
                ) from exc
        lease.expires_at = now + timedelta(seconds=lease.ttl)
        await self._event("task.heartbeat", lease.task_id, agent=lease.agent_id, token=lease.token)

    async def _settle(
        self,
        lease: Lease,
        outcome: Outcome,
        change: Callable[[tuple[Attempt, ...]], dict[str, Any]],
        *,
        error: str | None = None,
    ) -> TaskRecord:
        """End ``lease``'s attempt with ``outcome``: only with the current token, then drop its lease key.

        Every ending lets go of the task and appends the attempt; ``change`` adds what this ending
        sets (status, result, error), given the attempts so far. The CAS is on the revision the
        holder last wrote, so it succeeds at once unless someone else wrote since; then the fresh
        record must still name this holder and token."""
        if lease._ticket is None:
            entry = await self.leases.get(lease.task_id)
            token = None if entry is None else _lease_token(entry)
            if token != lease.token:
                raise LeaseLost(f"lease on {lease.task_id!r} (token {lease.token}) is no longer held")
            lease._lease_revision = entry.revision if entry is not None else 0
        attempt = _attempt_of(lease, outcome, utcnow(), error)

        def ended(record: TaskRecord) -> TaskRecord:
            if not _holds(lease, record):
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            attempts = (*record.attempts, attempt)
            # A deferred claim's outcome is its first write: it records the claim's token too.
            return record.model_copy(
                update={
                    "holder": None,
                    "ticket": None,
                    "token": lease.token,
                    "claimed_at": lease.started_at,
                    "unroutable": None,
                    "attempts": attempts,
                    **change(attempts),
                }
            )

        final, _ = await self._mutate(lease.task_id, ended, known=(lease._record, lease._revision))
        if lease._ticket is None:
            await self._drop_lease(lease.task_id, lease._lease_revision)
        return final

    async def complete(self, lease: Lease, result: JsonValue = None) -> TaskRecord:
        """Mark the task done with ``result`` (JSON). ``LeaseLost`` if the token is stale."""
        size = _json_size(result)
        if size > self.config.max_payload_bytes:
            raise PayloadTooLarge(f"result of task {lease.task_id!r}", size, self.config.max_payload_bytes)
        final = await self._settle(
            lease, "completed", lambda _: {"status": TaskStatus.DONE, "result": result, "error": None}
        )
        await self._event(
            "task.completed",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data=_held_as(lease, final),
        )
        await self._propagate(final)
        return final

    async def fail(self, lease: Lease, error: str, *, retry: bool = True) -> TaskRecord:
        """Record a failed attempt. With ``retry`` the task returns to pending (or goes dead after
        ``max_attempts``); without, it fails for good and so do its dependents."""

        def failed(attempts: tuple[Attempt, ...]) -> dict[str, Any]:
            status = TaskStatus.PENDING
            if not retry:
                status = TaskStatus.FAILED
            elif sum(1 for a in attempts if a.counted) >= lease.task.max_attempts:
                status = TaskStatus.DEAD
            return {"status": status, "error": error}

        final = await self._settle(lease, "failed", failed, error=error)
        await self._event(
            "task.failed",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={**_held_as(lease, final), "error": error, "retry": retry, "status": final.status.value},
        )
        if final.status is TaskStatus.DEAD:
            await self._event("task.dead", lease.task_id, data={"error": final.error})
        await self._propagate(final)
        return final

    async def release(self, lease: Lease, *, declined: str | None = None) -> TaskRecord:
        """Give the task back untouched, e.g. on shutdown; with ``declined``, record that this agent
        chose not to take it and why. Neither counts as an attempt."""
        outcome: Outcome = "released" if declined is None else "declined"
        final = await self._settle(lease, outcome, lambda _: {"status": TaskStatus.PENDING}, error=declined)
        await self._event(
            f"task.{outcome}",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={**_held_as(lease, final), "reason": declined},
        )
        return final

    async def mark_bad(self, task_id: str, reason: str, *, by: str | None = None) -> None:
        """Record that a done task's result was wrong: its completer's reputation pays for it."""
        record = await self.get(task_id)
        completer = next((a.agent for a in reversed(record.attempts) if a.outcome == "completed"), None)
        if record.status is not TaskStatus.DONE or completer is None:
            raise InvalidTask(
                f"task {task_id!r} is {record.status.value}: only a done task's result can be bad"
            )
        await self.trail.mark(
            BAD_RESULT_MARK,
            key=task_id,
            agent=by,
            data={"agent": completer, "requires": list(record.task.requires), "reason": reason},
        )

    async def progress(self, lease: Lease, fraction: float, note: str = "") -> None:
        """Leave a progress mark for a held task on the trail (writing a deferred claim first:
        a task that reports progress is one worth showing as claimed)."""
        if not 0.0 <= fraction <= 1.0:
            raise InvalidTask(f"progress must be within [0, 1], got {fraction}")
        await self.confirm(lease)
        await self._event(
            "task.progress",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={"fraction": fraction, "note": note},
        )

    # ----------------------------------------------------------------- dependencies

    async def _propagate(self, record: TaskRecord) -> None:
        """Carry a finished task's outcome to its dependents.

        Every step is idempotent, so whoever meets a finished task may redo this: that is how the
        consequences survive a crash right after the final CAS.
        """
        if record.status is TaskStatus.DONE:
            for dependent in record.dependents:
                await self._dependency_done(dependent, record.task.id)
        elif record.status.terminal:
            for dependent in record.dependents:
                await self._block(dependent, record.task.id, record)

    async def _recover(self, record: TaskRecord, *, by: str) -> None:
        """Finish what a crash may have cut short after ``record`` reached its terminal state.

        A ticket is acked only after its task's consequences are out, so meeting a finished task
        through a ticket means its finisher may have died in between: restore the final events the
        trail lacks (reputation depends on them) and propagate again.
        """
        task_id, last = record.task.id, record.attempts[-1] if record.attempts else None
        # Beyond the trail's retention a missing event is just aged out, not lost.
        young = utcnow() - record.updated_at < timedelta(seconds=self.trail.config.max_age / 2)
        if last is not None and last.outcome in ("completed", "failed", "expired") and young:
            kind = f"task.{last.outcome}"
            seen = await self.trail.last(kind, task_id)
            if seen is None or seen.token != last.token:
                data: dict[str, JsonValue] = {**_caps(record), "repaired": True}
                if last.outcome == "failed":
                    data.update(
                        error=last.error,
                        retry=record.status is not TaskStatus.FAILED,
                        status=record.status.value,
                    )
                await self._event(kind, task_id, agent=last.agent, token=last.token, data=data, by=by)
            if record.status is TaskStatus.DEAD and await self.trail.last("task.dead", task_id) is None:
                await self._event("task.dead", task_id, data={"error": record.error}, by=by)
        await self._propagate(record)

    async def _dependency_done(self, task_id: str, dep: str) -> None:
        def drop(record: TaskRecord) -> TaskRecord | None:
            if dep not in record.waiting_on:
                return None
            return record.model_copy(update={"waiting_on": tuple(d for d in record.waiting_on if d != dep)})

        after, revision = await self._mutate(task_id, drop)
        # Whoever finds it ready announces (a redo after a crash included); the ticket's msg id
        # dedupes racing announcers.
        if after.ready:
            await self._announce(after, revision)

    async def _announce(self, record: TaskRecord, revision: int, *, event: bool = True) -> None:
        await self.routes.announce(record, revision)
        if event:
            await self._event("task.ready", record.task.id, data={"route": record.task.route})

    async def _block(self, task_id: str, dep: str, dep_record: TaskRecord) -> None:
        reason = f"blocked: dependency {dep!r} is {dep_record.status.value}"
        if dep_record.error:
            reason += f" ({dep_record.error})"
        await self._finish_unclaimed(task_id, TaskStatus.FAILED, reason, event="task.blocked")

    async def _finish_unclaimed(
        self, task_id: str, status: TaskStatus, reason: str, *, event: str
    ) -> TaskRecord:
        """Move a task that nobody holds to a terminal ``status`` and propagate to its dependents."""
        changed = False

        def finish(record: TaskRecord) -> TaskRecord | None:
            nonlocal changed
            changed = not (record.status.terminal or record.status is TaskStatus.CLAIMED)
            return record.model_copy(update={"status": status, "error": reason}) if changed else None

        final, _ = await self._mutate(task_id, finish)
        if changed:
            await self._event(event, task_id, data={"error": reason, "status": status.value})
        # Even when unchanged: a crash may have cut the cascade short below this task.
        await self._propagate(final)
        return final


def _holds(lease: Lease, record: TaskRecord) -> bool:
    """Whether ``record`` still belongs to ``lease``: claimed with its token, or, for a deferred
    claim, still pending with nobody's claim since the record it started from."""
    if record.status is TaskStatus.CLAIMED:
        # Also a deferred claim whose write landed while its writer was cancelled.
        return record.token == lease.token and record.holder == lease.agent_id
    # Until it is written, ``_record`` is the record the deferred claim started from; any claim
    # since then has changed the token.
    return (
        not lease.claimed and record.ready and record.holder is None and record.token == lease._record.token
    )


def _lease_token(entry: Entry) -> int | None:
    """Token a lease key keeps alive (None when its value is garbage)."""
    lease = parse_or_none(LeaseRecord, entry.value, where=f"{LEASES_BUCKET}/{entry.key}")
    return None if lease is None else lease.token


def _claimed(
    record: TaskRecord, agent_id: str, *, token: int, now: datetime, ticket: int | None
) -> TaskRecord:
    """``record`` claimed by ``agent_id`` with fencing ``token`` (through ``ticket``, if any)."""
    return record.model_copy(
        update={
            "status": TaskStatus.CLAIMED,
            "holder": agent_id,
            "token": token,
            "ticket": ticket,
            "claimed_at": now,
            "unroutable": None,
        }
    )


def _expire(record: TaskRecord, now: datetime) -> tuple[TaskRecord, Attempt]:
    """``record`` after its holder's lease expired: the attempt counted, pending or dead."""
    attempt = _attempt(record, "expired", now)
    returned = record.model_copy(
        update={
            "attempts": (*record.attempts, attempt),
            "holder": None,
            "ticket": None,
            "status": TaskStatus.PENDING,
        }
    )
    if returned.counted_attempts >= record.task.max_attempts:
        error = (
            f"gave up after {returned.counted_attempts} attempts (max_attempts={record.task.max_attempts})"
        )
        returned = returned.model_copy(update={"status": TaskStatus.DEAD, "error": error})
    return returned, attempt


def _attempt_of(lease: Lease, outcome: Outcome, now: datetime, error: str | None = None) -> Attempt:
    """The attempt ``lease``'s holder ends with ``outcome``."""
    return Attempt(
        agent=lease.agent_id,
        token=lease.token,
        started_at=lease.started_at,
        ended_at=now,
        outcome=outcome,
        error=error,
    )


def _held_as(lease: Lease, record: TaskRecord) -> dict[str, JsonValue]:
    """What an outcome event says of the claim it ends: the task's capabilities, and whether the
    claim was deferred (never written, so no ``task.claimed`` event precedes it)."""
    return {**_caps(record), "deferred": True} if not lease.claimed else _caps(record)


def _caps(record: TaskRecord) -> dict[str, JsonValue]:
    """What reputation needs to know of a task: its kind and required capabilities."""
    return {"kind": record.task.kind, "requires": list(record.task.requires)}


def _attempt(
    record: TaskRecord,
    outcome: Outcome,
    now: datetime,
    error: str | None = None,
) -> Attempt:
    return Attempt(
        agent=record.holder or "?",
        token=record.token or 0,
        started_at=record.claimed_at or now,
        ended_at=now,
        outcome=outcome,
        error=error,
    )


def _check_id(value: str, *, what: str = "task id") -> None:
    if not isinstance(value, str) or not is_valid_id(value):
        raise InvalidTask(f"invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 _ -, starting alphanumeric")


def _parse_task(task: Task | Mapping[str, Any]) -> Task:
    if isinstance(task, Task):
        return task
    try:
        return Task.model_validate(task)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'task'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidTask(f"invalid task: {problems}") from exc
