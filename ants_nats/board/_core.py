"""What every transition of one board shares: its stores, reading and CAS-writing task records,
and laying events on the trail."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import JsonValue

from .. import _tickets
from .._store import Bucket, Conflict, ensure_kv, stream_config
from ..artifacts import Artifacts
from ..cards import Directory
from ..errors import AntsError, BoardNotFound, CorruptEntry, InvalidTask, NotYours, TaskNotFound
from ..identity import SIGNER_HEADER, Identity
from ..log import get_logger
from ..models import (
    PROTOCOL_VERSION,
    TaskRecord,
    TrailEvent,
    parse_or_none,
    stored_record,
    utcnow,
    wire_bytes,
)
from ..names import (
    FORGED_RECORD,
    ID_RULE,
    LEASES_BUCKET,
    LEDGER_BUCKET,
    TASKS_BUCKET,
    UNROUTABLE_BUCKET,
    is_valid_id,
)
from ..reputation import Reputation
from ..trail import Trail, TrailConfig
from .budget import Budgets
from .chain import Witness, report_forgery, sign_revision
from .config import BoardConfig
from .rates import Rates
from .seal import SIGNED_HISTORY, SIGNED_METADATA, Forgery, Revision, Seal, is_signed, judge

log = get_logger("board")


_ONCE_PER_LEASE = frozenset(
    {"task.claimed", "task.completed", "task.failed", "task.expired", "task.released", "task.declined"}
)
_ONCE_PER_TASK = frozenset({"task.submitted", "task.dead", "task.cancelled"})
_UNCONFIRMED = frozenset(
    {"task.submitted", "task.unroutable", "task.ready", "task.heartbeat", "task.progress"}
)
"""Events sent without waiting for the stream's ack (their loss costs nothing the board needs). A
claim's is confirmed: the ledger counts claims from it, and an outcome stands for a claim whose
event was lost (``claim_facts``)."""


class Core:
    """One board's connection, stores and settings, and the record and event primitives."""

    def __init__(self, nc: Client, js: JetStreamContext, config: BoardConfig) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.tasks = Bucket(js, TASKS_BUCKET)
        self.leases = Bucket(js, LEASES_BUCKET)
        self.unroutable = Bucket(js, UNROUTABLE_BUCKET)
        self.routes = _tickets.Routes(js, replicas=config.replicas, lease_ttl=config.lease_ttl)
        self.trail = Trail(nc, TrailConfig(replicas=config.replicas))
        self.directory = Directory(nc, replicas=config.replicas, card_ttl=config.card_ttl)
        self.reputation = Reputation(nc, config.reputation)
        self.artifacts = Artifacts(
            js, replicas=config.replicas, ttl=config.artifact_ttl, max_bytes=config.max_artifact_bytes
        )
        self.identities: dict[str, Identity] = {}
        witness = Witness(self.trail, self.directory)
        self.rates = Rates(js, replicas=config.replicas, identities=self.identities, witness=witness)
        self.budgets = Budgets(js, replicas=config.replicas, witness=witness)
        self._expiring = False
        self.signed = False
        """Whether the board is signed (see ``seal``): read from its tasks stream on ``ensure``."""
        self.seal = Seal(self.tasks, self.trail, self.directory, self.budgets, depth=SIGNED_HISTORY)
        self._wrote: dict[str, tuple[bytes, TaskRecord]] = {}
        """The value this board last wrote on each of the latest ``_WROTE_KEPT`` keys it finished,
        and the record it serialised (``record_in``)."""

    async def ensure(self) -> None:
        """Create the buckets and streams the board needs, where missing."""
        js, config = self.js, self.config
        history = max(config.task_history, SIGNED_HISTORY) if config.signed else config.task_history
        # (A signed record is judged on its history, read from the leader: no direct gets for a
        # signed board, nor for one this client takes to be unsigned until it has looked.)
        existing = await stream_config(js, f"KV_{TASKS_BUCKET}")
        unsigned = not config.signed and (existing is None or not is_signed(existing))
        tasks = await ensure_kv(
            js,
            TASKS_BUCKET,
            replicas=config.replicas,
            history=history,
            atomic=True,
            direct=unsigned,
            metadata={SIGNED_METADATA: "true"} if config.signed else None,
            erasable=not config.signed,  # a signed record's history is its proof
        )
        self._signs(is_signed(tasks))
        self.tasks.direct = bool(tasks.allow_direct) and not self.signed
        if config.signed and not self.signed:
            raise AntsError(
                f"BoardConfig.signed: the board's bucket {TASKS_BUCKET} was created unsigned; a board is "
                "signed from its creation on (make a new one, or connect without signed=True)"
            )
        # A bucket made by another client may not take per-message TTLs: its records then stay.
        # A signed board never rolls a record's history up: that would erase the proof of its state.
        self._expiring = config.finished_ttl is not None and bool(tasks.allow_msg_ttl) and not self.signed
        # Two revisions: a deletion and the lease it ended, so an early (forged) one shows.
        await ensure_kv(js, LEASES_BUCKET, replicas=config.replicas, history=2, marker_ttl=config.lease_ttl)
        await ensure_kv(js, UNROUTABLE_BUCKET, replicas=config.replicas, history=1)
        await self.routes.ensure()
        await self.trail.ensure()
        await self.directory.ensure()
        await ensure_kv(js, LEDGER_BUCKET, replicas=config.replicas, history=1)
        await self.rates.ensure(signed=self.signed)
        await self.budgets.ensure(signed=self.signed)

    def _signs(self, signed: bool) -> None:
        """Note whether the board is signed (as its tasks stream says), here and in its counters."""
        self.signed = self.budgets.signed = self.rates.signed = signed

    async def find(self) -> None:
        """Bind to the board as it is, creating nothing (a reader's ``ensure``)."""
        config = await stream_config(self.js, f"KV_{TASKS_BUCKET}")
        if config is None:
            raise BoardNotFound(
                f"no board on this server yet (no bucket {TASKS_BUCKET}): an agent, a submission or "
                "the operator sets one up"
            )
        self._signs(is_signed(config))

    async def event(
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
        holds that agent's identity, and published on a subject ending with its id (else with
        ``_``). Events that happen once per task or per lease carry a message id, so a repair
        racing the original writer cannot record them twice.
        """
        log.info(kind, task_id=task_id, agent=agent, token=token)
        emitter = by or agent
        signer = self.identities.get(emitter) if emitter else None
        event = TrailEvent(
            kind=kind,
            ref=task_id,
            agent=agent,
            token=token,
            data=data,
            by=emitter if signer else None,
            v=PROTOCOL_VERSION,  # as the trail would set it, without a copy there
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

    async def drop_unroutable(self, task_id: str, revision: int | None = None) -> None:
        """Remove ``task_id`` from ``ants_unroutable`` (at ``revision``, if given: a key written
        again since then stays)."""
        if revision is None:
            entry = await self.unroutable.get(task_id)
            if entry is None:
                return
            revision = entry.revision
        with contextlib.suppress(Conflict):  # written again, or removed, meanwhile
            await self.unroutable.delete(task_id, last=revision)

    def signer(self, by: str | None, record: TaskRecord | None = None) -> Identity | None:
        """Who signs a write made by ``by``: its identity, else (no ``by``) the task's owner's or
        the only identity this board holds; None when this board holds none of them."""
        if by is not None:
            return self.identities.get(by)
        owner = self.identities.get(record.task.created_by) if record is not None else None
        if owner is not None:
            return owner
        return next(iter(self.identities.values())) if len(self.identities) == 1 else None

    def key_of(self, agent_id: str | None) -> str | None:
        """The public key ``agent_id`` signs with on a signed board (None elsewhere)."""
        identity = self.identities.get(agent_id) if self.signed and agent_id else None
        return identity.public_key if identity is not None else None

    async def get_entry(self, task_id: str) -> tuple[TaskRecord, int]:
        """The record of ``task_id`` and its revision (restored if someone wrote garbage over it,
        or, on a signed board, forged it)."""
        if self.signed:
            return await self._get_signed(task_id)
        entry = await self.tasks.get(task_id)
        if entry is None:
            raise TaskNotFound(f"no task {task_id!r} on the board")
        record = stored_record(task_id, entry.value)
        if record is None or record.task.id != task_id:
            return await self._restore(task_id, entry.revision)
        return record, entry.revision

    async def _restore(self, task_id: str, bad_revision: int) -> tuple[TaskRecord, int]:
        """Put back the last valid revision of a record someone overwrote with garbage.

        No honest writer produces an invalid record, so the key's history (``task_history``
        revisions) still holds the true state. The repair is a CAS on the bad revision and is
        recorded on the trail as ``corrupt.task``. A key flooded with more garbage than its history
        keeps has lost its state: the task is quarantined (``corrupt.quarantined`` on the trail,
        once per bad revision; every reader gets ``CorruptEntry``, agents drop its tickets).
        """
        history = await self.tasks.history(task_id)
        for entry in reversed(history):
            record = parse_or_none(
                TaskRecord, entry.value, where=f"{TASKS_BUCKET}/{task_id}@{entry.revision}"
            )
            if record is not None and record.task.id == task_id:
                break
        else:
            log.error("task.quarantined", task_id=task_id, bad_revision=bad_revision, kept=len(history))
            data: JsonValue = {"bad_revision": bad_revision, "kept_revisions": len(history)}
            await self.trail.emit(
                TrailEvent(kind="corrupt.quarantined", ref=task_id, data=data),
                msg_id=f"corrupt.quarantined-{task_id}-{bad_revision}",
            )
            raise CorruptEntry(
                f"task {task_id!r} is quarantined: all {len(history)} kept revisions of "
                f"{TASKS_BUCKET}/{task_id} are invalid (flooded with garbage), so its state is lost; "
                "submit it again under a new id"
            )
        try:
            revision = await self.tasks.update(task_id, wire_bytes(record), last=bad_revision)
        except Conflict:
            return await self.get_entry(task_id)  # someone wrote (or restored) it meanwhile
        log.warning("task.restored", task_id=task_id, bad_revision=bad_revision, restored=entry.revision)
        await self.trail.emit(
            TrailEvent(
                kind="corrupt.task",
                ref=task_id,
                data={"bad_revision": bad_revision, "restored_revision": entry.revision},
            )
        )
        return record, revision

    async def _get_signed(self, task_id: str) -> tuple[TaskRecord, int]:
        """``get_entry`` on a signed board: the last legal revision, written back over forged ones."""
        while True:
            top, legal, forged = await self.seal.legal(task_id)
            if top is None:
                raise TaskNotFound(f"no task {task_id!r} on the board")
            if (legal is not None and legal.seq == top.seq) or (legal is None and top.record is None):
                # The last revision is legal (forgeries below it were undone before).
                if legal is None or legal.record is None:
                    raise TaskNotFound(f"no task {task_id!r} on the board")
                return legal.record, legal.seq
            try:
                if legal is None or legal.record is None:  # the task is legally absent (or deleted)
                    await self.tasks.delete(task_id, last=top.seq, headers=legal.signature if legal else None)
                else:
                    await self.tasks.update(task_id, legal.payload, last=top.seq, headers=legal.signature)
            except Conflict:
                continue  # written (or restored) meanwhile: judge again
            for forgery in forged:
                await self._forged(task_id, forgery, legal)

    async def _forged(self, task_id: str, forgery: Forgery, legal: Revision | None) -> None:
        seq = forgery.revision.seq
        await report_forgery(
            self.trail,
            "task.forged",
            {"task_id": task_id},
            ref=task_id,
            agent=forgery.agent,
            data={
                "revision": seq,
                "why": forgery.why,
                "key": forgery.key,
                "restored": legal.seq if legal else None,
            },
            msg_id=f"{FORGED_RECORD}-{task_id}-{seq}",
        )

    async def mutate(
        self,
        task_id: str,
        change: Callable[[TaskRecord], TaskRecord | None],
        *,
        known: tuple[TaskRecord, int] | None = None,
        by: str | None = None,
        stamped: bool = False,
    ) -> tuple[TaskRecord, int]:
        """Apply ``change`` to the record with CAS, re-reading and retrying when someone else wrote;
        returns the record and its revision.

        ``change`` returns the new record, or None to leave it as it is; it may raise to abort.
        ``known`` is a (record, revision) the caller just read or wrote: the first attempt writes
        on it without reading again (a conflict means a fresh read, as always); without it, the
        first attempt writes on a direct get of the record (``Bucket.guess``: the raw value from
        any replica, perhaps behind), a guess as well, on which ``change`` may not abort either.
        ``stamped``: ``change`` sets ``updated_at`` itself (to now), sparing a copy of the record to
        set it.
        """
        guess = None if known is not None else await self._guess(task_id)
        known = known or guess
        while True:
            guessed = known is not None
            behind = guessed and known is guess  # (a replica's copy: perhaps an older revision)
            record, revision = known if known is not None else await self.get_entry(task_id)
            known = None
            try:
                new = change(record)
            except Exception:
                if behind:
                    continue  # an abort is decided on a fresh read too
                raise
            if new is None:
                if guessed:
                    continue  # "nothing to do" is decided on a fresh read only
                return record, revision
            if not stamped:
                new = new.model_copy(update={"updated_at": utcnow()})
            try:
                revision = await self.write(new, last=revision, by=by)
            except Conflict:
                continue
            return new, revision

    async def _guess(self, task_id: str) -> tuple[TaskRecord, int] | None:
        """The record of ``task_id`` as a direct get finds it (None: none there, or not valid: the
        fresh read decides what that means)."""
        entry = await self.tasks.guess(task_id)
        record = None if entry is None else stored_record(task_id, entry.value)
        return (
            None if entry is None or record is None or record.task.id != task_id else (record, entry.revision)
        )

    async def write(self, record: TaskRecord, *, last: int, by: str | None = None) -> int:
        """CAS ``record`` over revision ``last``, signed on a signed board for ``by`` (see
        ``signer``); its new revision, or ``Conflict``.

        A finished record that no unfinished dependent needs replaces the key's history and
        expires after ``finished_ttl`` (storage must not grow forever)."""
        if record.v != PROTOCOL_VERSION:
            record = record.model_copy(update={"v": PROTOCOL_VERSION})
        task_id, value = record.task.id, wire_bytes(record)
        if not self.signed:
            if (
                self._expiring
                and record.status.terminal
                and set(record.dependents) <= set(record.finished_dependents)
            ):
                revision = await self.tasks.update(
                    task_id, value, last=last, ttl=self.config.finished_ttl, rollup=True
                )
            else:
                revision = await self.tasks.update(task_id, value, last=last)
            self._note_written(task_id, value, record)
            return revision
        identity = self.signer(by, record)
        self._check_legal(record, last, identity)
        headers = sign_revision(identity, self.tasks.subject(task_id), last, value) if identity else {}
        revision = await self.tasks.update(task_id, value, last=last, headers=headers)
        self.remember(record, value, revision, headers, last=last)
        return revision

    def _note_written(self, task_id: str, value: bytes, record: TaskRecord) -> None:
        wrote = self._wrote
        wrote.pop(task_id, None)
        # Finished records only (what a wait reads), and only those that read back as they are.
        if record.status.terminal and _plain_json(record.result):
            wrote[task_id] = (value, record)
            if len(wrote) > _WROTE_KEPT:
                del wrote[next(iter(wrote))]

    def record_in(self, task_id: str, value: bytes) -> TaskRecord | None:
        """The record ``value`` holds on ``task_id`` (None if it is garbage, logged): a finished
        record this board wrote as ``value`` lately is taken as it was written, not parsed again
        (a reader of its own writes, such as a ``wait`` beside the agents on one connection)."""
        wrote = self._wrote.get(task_id)
        if wrote is not None and wrote[0] == value:
            return wrote[1]
        return stored_record(task_id, value)

    def _check_legal(self, record: TaskRecord, last: int, identity: Identity | None) -> None:
        """``NotYours`` unless ``identity`` may write ``record`` over the legal revision ``last``
        (as far as this board knows it): a change every reader would undo is not written."""
        known = self.seal.known.get(record.task.id)
        if known is None or known.seq != last:
            return  # judged by the readers (this board read it through ``get_entry``, or CAS fails)
        key = identity.public_key if identity is not None else None
        verdict = judge(known.record, record, key, prev=last, now=utcnow())
        if verdict.illegal is not None:
            owner = known.record.task.created_by if known.record is not None else "?"
            raise NotYours(
                f"task {record.task.id!r} is on a signed board and belongs to {owner!r}: this change "
                f"{verdict.illegal}, which only its owner or holder may make (sign as them: --as / sign_as)"
            )

    def remember(
        self, record: TaskRecord, value: bytes, revision: int, signature: dict[str, str], *, last: int
    ) -> None:
        """Note a revision this board wrote (``value`` at ``revision``, over ``last``, with the
        ``signature`` headers) as legal: its own reads and watches need not judge it again."""
        signer = signature.get(SIGNER_HEADER)
        self.seal.wrote(
            record.task.id,
            Revision(
                seq=revision,
                record=record,
                payload=value,
                signature=signature,
                signer=signer,
                prev=last,
                erases=False,
            ),
        )


_WROTE_KEPT = 256
"""Records a board keeps of those it wrote (``Core.record_in``): the last few hundred, what a reader
beside the writers is sent within a moment (more would only weigh on the garbage collector, which
walks every object the process keeps)."""


_PLAIN_SCALARS = (str, int, float, bool)


def _plain_json(value: JsonValue) -> bool:
    """Whether ``value`` reads back from its JSON as it is (no tuples, no keys but strings)."""
    if value is None or type(value) in _PLAIN_SCALARS:
        return True
    if type(value) is list:
        return all(_plain_json(item) for item in value)
    if type(value) is dict:
        return all(isinstance(key, str) and _plain_json(item) for key, item in value.items())
    return False


def check_id(value: str, *, what: str = "task id") -> None:
    """``InvalidTask`` unless ``value`` is a valid id (it becomes a key and a subject token)."""
    if not isinstance(value, str) or not is_valid_id(value):
        raise InvalidTask(f"invalid {what} {value!r}: use {ID_RULE}")


def json_encoded(value: JsonValue, *, what: str) -> bytes:
    """``value`` as compact JSON (what payload and result limits count, and what the artifact store
    keeps of a large one); ``InvalidTask`` naming ``what`` when it is not JSON (NaN and infinities
    are not)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise InvalidTask(f"{what} is not JSON: {exc}") from exc
