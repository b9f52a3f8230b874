"""The task board: claim-and-lock with self-expiring leases and fencing tokens on JetStream KV.

Protocol (all decisions are single compare-and-set writes; there is no coordinator):

* A task's state lives in ``ants_tasks/<id>``; a claim is ``ants_leases/<id>``, created with a
  per-key TTL. Creating the lease is the atomic claim: of N racing agents exactly one create
  succeeds; its revision is the **fencing token**. The winner then moves the record to ``claimed``
  with a CAS on the record's revision.
* ``heartbeat`` re-writes the lease with a CAS on its last revision (and a fresh TTL); ``complete``,
  ``fail`` and ``release`` check the token against both the live lease and the record and CAS the
  record. A stale token fails with ``LeaseLost`` and changes nothing.
* When a holder dies its lease expires on the server. The task's ticket (see ``_tickets``) is then
  redelivered to another agent, whose claim finds the stale ``claimed`` record, records the expired
  attempt and either takes over or dead-letters the task after ``max_attempts``.
* Dependencies: a record lists the dependencies it still ``waits_on`` and its ``dependents``. The
  agent that completes a task removes it from each dependent (CAS); whoever empties the list
  publishes the dependent's ticket. A failed or dead task fails its dependents with a reason.
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
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import JsonValue

from . import _tickets, matching
from ._connect import connect
from ._store import Bucket, Conflict, Entry, ensure_consumer, ensure_kv, watch_values
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
    TrailEvent,
    parse_or_none,
    utcnow,
)
from .names import BAD_RESULT_MARK, EXPIRY_CONSUMER, LEASES_BUCKET, LEDGER_BUCKET, TASKS_BUCKET, is_valid_id
from .reputation import Reputation, ReputationConfig
from .trail import Trail, TrailConfig

log = get_logger("board")

_ONCE_PER_LEASE = frozenset(
    {"task.claimed", "task.completed", "task.failed", "task.expired", "task.released", "task.declined"}
)
_ONCE_PER_TASK = frozenset({"task.submitted", "task.dead"})

_CLOCK_SKEW_S = 2.0
"""Tolerance between this host's clock and the server's when judging a lease's age."""


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

    def __post_init__(self) -> None:
        # The server rejects per-message TTLs under one second.
        for name in ("lease_ttl", "card_ttl"):
            if getattr(self, name) < 1.0:
                raise AntsError(f"BoardConfig.{name} must be at least 1 second")
        if self.replicas not in (1, 3, 5):
            raise AntsError("BoardConfig.replicas must be 1, 3 or 5")


@dataclass
class Lease:
    """A held claim on a task. ``token`` is the fencing token: the lease's KV revision at claim time."""

    task: Task
    token: int
    agent_id: str
    ttl: float
    expires_at: datetime
    _revision: int = field(repr=False)

    @property
    def task_id(self) -> str:
        """Id of the claimed task."""
        return self.task.id


@dataclass(frozen=True)
class Taken:
    """The definite answer of a claim that did not win.

    ``reason``: ``held`` (another agent holds a live lease; retry after ``retry_after`` s),
    ``finished`` (the task is done, failed or dead; ``status`` says which), ``not_ready``
    (dependencies are not done yet), ``unknown`` (no such task) or ``quarantined`` (the claimant's
    reputation for a required capability is too low, and the claim was not on probation).
    """

    task_id: str
    reason: Literal["held", "finished", "not_ready", "unknown", "quarantined"]
    holder: str | None = None
    retry_after: float | None = None
    status: TaskStatus | None = None
    quarantined: tuple[str, ...] = ()
    """With reason ``quarantined``: the capabilities the claimant is not trusted with right now."""


def _dump(model: pydantic.BaseModel) -> bytes:
    return model.model_dump_json().encode()


def _json_size(value: JsonValue) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _parse_watched(key: str, value: bytes) -> TaskRecord | None:
    return parse_or_none(TaskRecord, value, where=f"{TASKS_BUCKET}/{key}")


def _lease_token(entry: Entry) -> int | None:
    """Token of a lease entry: written in the value after the first heartbeat, else its revision."""
    lease = parse_or_none(LeaseRecord, entry.value, where=f"{LEASES_BUCKET}/{entry.key}")
    if lease is None:
        return None
    return lease.token if lease.token is not None else entry.revision


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
        self.directory = Directory(nc, replicas=config.replicas, card_ttl=config.card_ttl)
        self.reputation = Reputation(nc, config.reputation)
        self._identities: dict[str, Identity] = {}
        """Scores read from the ledger; every claim through this board checks them."""
        """Live agent cards: who can do what right now."""
        """The trail every state change of this board is written to."""

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
        # The marker TTL lets watchers see an expiry as an event before the marker itself goes.
        await ensure_kv(
            js, LEASES_BUCKET, replicas=replicas, history=1, marker_ttl=max(self.config.lease_ttl, 1.0)
        )
        await self.routes.ensure()
        await self.trail.ensure()
        await self.directory.ensure()
        await ensure_kv(js, LEDGER_BUCKET, replicas=replicas, history=1)
        await ensure_consumer(
            js,
            f"KV_{LEASES_BUCKET}",
            ConsumerConfig(
                durable_name=EXPIRY_CONSUMER,
                filter_subject=f"$KV.{LEASES_BUCKET}.>",
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=-1,
                max_ack_pending=-1,
            ),
        )

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
            revision = await self.tasks.update(task_id, _dump(record), last=bad_revision)
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

        Everything is validated before anything is written: malformed fields (``InvalidTask``),
        oversized payloads (``PayloadTooLarge``), duplicate ids or ids on the board with another
        definition (``TaskExists``), unknown dependencies (``UnknownDependency``) and cycles
        (``DependencyCycle``).

        Submitting is idempotent by task id: a task already on the board with the same definition
        is accepted as it is, and whatever a failed earlier submission left undone (announcing it,
        linking it to its dependencies, its trail event) is completed. So a caller that lost the
        answer to a submission, or crashed during it, can simply submit again.
        """
        batch = [_parse_task(task) for task in tasks]
        for task in batch:
            size = _json_size(task.payload)
            if size > self.config.max_payload_bytes:
                raise PayloadTooLarge(f"payload of task {task.id!r}", size, self.config.max_payload_bytes)
        check_batch(batch)
        ids = {task.id for task in batch}
        existing = {task.id for task in batch if await self._same_task_exists(task)}
        external = {dep for task in batch for dep in task.depends_on if dep not in ids}
        for dep in sorted(external):
            if await self.tasks.get(dep) is None:
                raise UnknownDependency(f"dependency {dep!r} is not on the board nor in the submission")

        cards = await self.directory.cards()
        fresh = [task for task in batch if task.id not in existing]
        dependents: dict[str, list[str]] = {task.id: [] for task in fresh}
        for task in fresh:
            for dep in task.depends_on:
                if dep in dependents:
                    dependents[dep].append(task.id)
        written: dict[str, TaskRecord] = {}
        for task in fresh:
            record = TaskRecord(
                task=task,
                waiting_on=task.depends_on,
                dependents=tuple(sorted(dependents[task.id])),
                unroutable=matching.unroutable(cards, task.requires),
            )
            try:
                await self.tasks.create(task.id, _dump(record))
            except Conflict as exc:
                if not await self._same_task_exists(task):
                    raise TaskExists(f"task {task.id!r} was submitted concurrently by someone else") from exc
                existing.add(task.id)  # an identical concurrent submission: one of us is enough
                continue
            written[task.id] = record
            await self.routes.register(task.requires, express=task.express)
            await self._submitted(task)
            if record.unroutable is not None:
                log.warning("task.unroutable", task_id=task.id, missing=record.unroutable)
                await self._event("task.unroutable", task.id, data={"missing": list(record.unroutable)})
        for task in batch:
            if task.id in existing:
                await self.routes.register(task.requires, express=task.express)
                if await self.trail.last("task.submitted", task.id) is None:
                    await self._submitted(task)

        for task in batch:
            for dep in task.depends_on:
                if dep not in written or task.id in existing:
                    await self._attach_to_dependency(task.id, dep)  # announces it if now ready
        for task in batch:
            if task.id in written and not task.depends_on:
                await self._announce(task)
                continue
            written[task.id] = await self.get(task.id)  # dependencies may have changed it
            if task.id in existing and written[task.id].ready:
                await self._announce(task)  # finishes an interrupted submission
        return [written[task.id] for task in batch]

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
        }
        await self._event("task.submitted", task.id, agent=task.created_by, data=data)

    async def _attach_to_dependency(self, task_id: str, dep: str) -> None:
        """Register ``task_id`` as a dependent of existing task ``dep``, or settle it if ``dep`` ended."""

        def add_dependent(record: TaskRecord) -> TaskRecord | None:
            if record.status.terminal:
                return None
            return record.model_copy(update={"dependents": tuple(sorted({*record.dependents, task_id}))})

        # A terminal dependency is returned unchanged, so its status tells how to settle ``task_id``.
        dep_record = await self._mutate(dep, add_dependent)
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
    ) -> TaskRecord:
        """Apply ``change`` to the record with CAS, re-reading and retrying when someone else wrote.

        ``change`` returns the new record, or None to leave it as it is; it may raise to abort.
        ``known`` is a (record, revision) the caller just read: the first attempt writes on it
        without reading again (a conflict means a fresh read, as always).
        """
        while True:
            guessed = known is not None
            record, revision = known if known is not None else await self._get_entry(task_id)
            known = None
            new = change(record)
            if new is None:
                if guessed:
                    continue  # "nothing to do" is decided on a fresh read only
                return record
            new = new.model_copy(update={"updated_at": utcnow()})
            try:
                await self.tasks.update(task_id, _dump(new), last=revision)
            except Conflict:
                continue
            return new

    # ----------------------------------------------------------------- claiming

    async def claim(self, task_id: str, agent_id: str, *, probation: bool = False) -> Lease | Taken:
        """Try to claim ``task_id`` for ``agent_id``: a ``Lease`` if this call won, else ``Taken``.

        An agent quarantined for one of the task's capabilities is refused unless ``probation``
        (the runtime sets it once a ticket has been offered ``probation_after`` times) and the
        task has more than one attempt left.
        """
        _check_id(task_id)
        _check_id(agent_id, what="agent id")
        try:
            record, revision = await self._get_entry(task_id)
        except TaskNotFound:
            return Taken(task_id, "unknown")
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

        now = utcnow()
        ttl = self.config.lease_ttl
        lease_value = LeaseRecord(task_id=task_id, agent=agent_id, ttl=ttl, claimed_at=now)
        try:
            token = await self.leases.create(task_id, _dump(lease_value), ttl=ttl)
        except Conflict:
            return await self._held(task_id)

        expired: Attempt | None = None

        def take(record: TaskRecord) -> TaskRecord | None:
            nonlocal expired
            if record.status.terminal:
                return None
            expired = None
            stale = record
            if record.status is TaskStatus.CLAIMED and record.token is not None:
                # Our create succeeded, so the previous holder's lease is gone: it expired.
                stale, expired = _expire(record, now)
                if stale.status is TaskStatus.DEAD:
                    return stale
            return stale.model_copy(
                update={
                    "status": TaskStatus.CLAIMED,
                    "holder": agent_id,
                    "token": token,
                    "claimed_at": now,
                    "unroutable": None,
                }
            )

        final = await self._mutate(task_id, take, known=(record, revision))
        if expired is not None:
            await self._event(
                "task.expired",
                task_id,
                agent=expired.agent,
                token=expired.token,
                data={**_caps(final), "noticed_by": agent_id},
                by=agent_id,
            )
        if final.status is not TaskStatus.CLAIMED or final.token != token:
            await self._drop_lease(task_id, token)
            if final.status is TaskStatus.DEAD and expired is not None:
                await self._event("task.dead", task_id, data={"error": final.error})
                await self._propagate(final)
            return Taken(task_id, "finished", status=final.status)
        await self._event(
            "task.claimed",
            task_id,
            agent=agent_id,
            token=token,
            data={
                "kind": final.task.kind,
                "requires": list(final.task.requires),
                "attempt": len(final.attempts) + 1,
            },
        )
        return Lease(final.task, token, agent_id, ttl, now + timedelta(seconds=ttl), _revision=token)

    async def reconcile_expiry(self, task_id: str, *, noticed_by: str | None = None) -> TaskRecord | None:
        """The server expired the lease of ``task_id``: count the attempt and put the task back
        (pending, or dead after ``max_attempts``). A no-op if someone re-claimed it meanwhile.

        Agents call this when the leases bucket shows an expiry marker, so a task returns to the
        board at once even when no agent is free to re-claim it; a claim that finds a stale
        ``claimed`` record does the same work itself.
        """
        try:
            record, _ = await self._get_entry(task_id)
        except TaskNotFound:
            return None
        if record.status is not TaskStatus.CLAIMED or await self.leases.get(task_id) is not None:
            return None
        stale_token, now = record.token, utcnow()
        expired: list[Attempt] = []

        def expire(current: TaskRecord) -> TaskRecord | None:
            # Guarded by the token: a claim that raced in after our lease check wins.
            if current.status is not TaskStatus.CLAIMED or current.token != stale_token:
                return None
            returned, attempt = _expire(current, now)
            expired[:] = [attempt]
            return returned

        final = await self._mutate(task_id, expire)
        if expired:
            attempt = expired[0]
            data: JsonValue = {**_caps(final), "noticed_by": noticed_by}
            await self._event(
                "task.expired", task_id, agent=attempt.agent, token=attempt.token, data=data, by=noticed_by
            )
            if final.status is TaskStatus.DEAD:
                await self._event("task.dead", task_id, data={"error": final.error})
                await self._propagate(final)
        return final

    async def _held(self, task_id: str) -> Taken:
        entry = await self.leases.get(task_id)
        if entry is None:
            # Released or expired between our create and this read: worth retrying at once.
            return Taken(task_id, "held", retry_after=0.0)
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
            await self.leases.delete(task_id, last=revision)

    # ----------------------------------------------------------------- holding

    async def heartbeat(self, lease: Lease) -> None:
        """Extend ``lease`` by a full TTL; ``LeaseLost`` if it expired or was replaced."""
        now = utcnow()
        value = LeaseRecord(
            task_id=lease.task_id, agent=lease.agent_id, ttl=lease.ttl, claimed_at=now, token=lease.token
        )
        try:
            lease._revision = await self.leases.update(
                lease.task_id, _dump(value), last=lease._revision, ttl=lease.ttl
            )
        except Conflict as exc:
            raise LeaseLost(f"lease on {lease.task_id!r} (token {lease.token}) expired or was taken") from exc
        lease.expires_at = now + timedelta(seconds=lease.ttl)
        await self._event("task.heartbeat", lease.task_id, agent=lease.agent_id, token=lease.token)

    async def _settle(self, lease: Lease, settle: Callable[[TaskRecord], TaskRecord]) -> TaskRecord:
        """Apply a holder's final transition: only with the current token, then drop the lease."""
        entry = await self.leases.get(lease.task_id)
        if entry is None or _lease_token(entry) != lease.token:
            raise LeaseLost(f"lease on {lease.task_id!r} (token {lease.token}) is no longer held")

        def guarded(record: TaskRecord) -> TaskRecord:
            if record.status is not TaskStatus.CLAIMED or record.token != lease.token:
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            return settle(record)

        final = await self._mutate(lease.task_id, guarded)
        await self._drop_lease(lease.task_id, entry.revision)
        return final

    async def complete(self, lease: Lease, result: JsonValue = None) -> TaskRecord:
        """Mark the task done with ``result`` (JSON). ``LeaseLost`` if the token is stale."""
        size = _json_size(result)
        if size > self.config.max_payload_bytes:
            raise PayloadTooLarge(f"result of task {lease.task_id!r}", size, self.config.max_payload_bytes)
        now = utcnow()
        final = await self._settle(
            lease,
            lambda r: r.model_copy(
                update={
                    "status": TaskStatus.DONE,
                    "holder": None,
                    "result": result,
                    "error": None,
                    "attempts": (*r.attempts, _attempt(r, "completed", now)),
                }
            ),
        )
        await self._event(
            "task.completed", lease.task_id, agent=lease.agent_id, token=lease.token, data=_caps(final)
        )
        await self._propagate(final)
        return final

    async def fail(self, lease: Lease, error: str, *, retry: bool = True) -> TaskRecord:
        """Record a failed attempt. With ``retry`` the task returns to pending (or goes dead after
        ``max_attempts``); without, it fails for good and so do its dependents."""
        now = utcnow()

        def failed(record: TaskRecord) -> TaskRecord:
            attempts = (*record.attempts, _attempt(record, "failed", now, error))
            status = TaskStatus.PENDING
            if not retry:
                status = TaskStatus.FAILED
            elif sum(1 for a in attempts if a.counted) >= record.task.max_attempts:
                status = TaskStatus.DEAD
            return record.model_copy(
                update={"status": status, "holder": None, "error": error, "attempts": attempts}
            )

        final = await self._settle(lease, failed)
        await self._event(
            "task.failed",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={**_caps(final), "error": error, "retry": retry, "status": final.status.value},
        )
        if final.status is TaskStatus.DEAD:
            await self._event("task.dead", lease.task_id, data={"error": final.error})
        await self._propagate(final)
        return final

    async def release(self, lease: Lease, *, declined: str | None = None) -> TaskRecord:
        """Give the task back untouched, e.g. on shutdown; with ``declined``, record that this agent
        chose not to take it and why. Neither counts as an attempt."""
        now = utcnow()
        outcome: Outcome = "released" if declined is None else "declined"
        final = await self._settle(
            lease,
            lambda r: r.model_copy(
                update={
                    "status": TaskStatus.PENDING,
                    "holder": None,
                    "attempts": (*r.attempts, _attempt(r, outcome, now, declined)),
                }
            ),
        )
        await self._event(
            f"task.{outcome}",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={"reason": declined},
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
        """Leave a progress mark for a held task on the trail (no state change)."""
        if not 0.0 <= fraction <= 1.0:
            raise InvalidTask(f"progress must be within [0, 1], got {fraction}")
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

        after = await self._mutate(task_id, drop)
        # Whoever finds it ready announces (a redo after a crash included); the ticket's msg id
        # dedupes racing announcers.
        if after.ready:
            await self._announce(after.task)

    async def _announce(self, task: Task) -> None:
        await self.routes.announce(task)
        await self._event("task.ready", task.id, data={"route": task.route})

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

        final = await self._mutate(task_id, finish)
        if changed:
            await self._event(event, task_id, data={"error": reason, "status": status.value})
        # Even when unchanged: a crash may have cut the cascade short below this task.
        await self._propagate(final)
        return final


def _expire(record: TaskRecord, now: datetime) -> tuple[TaskRecord, Attempt]:
    """``record`` after its holder's lease expired: the attempt counted, pending or dead."""
    attempt = _attempt(record, "expired", now)
    returned = record.model_copy(
        update={"attempts": (*record.attempts, attempt), "holder": None, "status": TaskStatus.PENDING}
    )
    if returned.counted_attempts >= record.task.max_attempts:
        error = (
            f"gave up after {returned.counted_attempts} attempts (max_attempts={record.task.max_attempts})"
        )
        returned = returned.model_copy(update={"status": TaskStatus.DEAD, "error": error})
    return returned, attempt


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
