"""The ledger: per-agent history and reputation projected from the trail into ``ants_ledger``.

The projection is a pure fold (``apply``) over task events, so it can be rebuilt from the trail at
any time. It is idempotent: each agent's entry remembers the last stream sequence it applied, and
the follower runs ``in_order``, so a redelivered event is recognised and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta

import nats.errors
import nats.js.errors
import pydantic
from nats.aio.client import Client
from pydantic import JsonValue

from ._connect import jetstream
from ._pull import last_of_each
from ._store import Bucket, Conflict, ensure_kv, is_tombstone, patiently, stream_config
from ._watch import watch_entries, watch_values
from .access import LEDGER_CONSUMER
from .board.budget import Budgets
from .board.chain import Witness
from .board.rates import CLOCK_SKEW_S, Rates
from .board.seal import SIGNED_HISTORY, Seal, is_signed
from .cards import Directory
from .errors import AntsError, CorruptEntry
from .log import get_logger
from .models import (
    ANY_CAPABILITY,
    AgentLedger,
    Attempt,
    Counts,
    Score,
    TaskRecord,
    TaskStatus,
    TrailEvent,
    Usage,
    parse_or_none,
    stored_record,
    utcnow,
)
from .names import (
    ANONYMOUS,
    BAD_RESULT_MARK,
    BUDGETS_BUCKET,
    COUNTED_BUCKET,
    FORGED_RECORD,
    LEDGER_BUCKET,
    RATES_BUCKET,
    TASKS_BUCKET,
    TRAIL_STREAM,
    TRAIL_SUBJECT_PREFIX,
    is_valid_id,
)
from .reputation import COUNTED, EVIDENCE
from .trail import Trail
from .verify import Verifier

log = get_logger("ledger")

WATCHED = (
    # Only what is counted: the server filters the rest (submitted, ready ...) out of the feed.
    *(f"{TRAIL_SUBJECT_PREFIX}.task.{what}.>" for what in COUNTED if what not in ("bad_result", "forged")),
    f"{TRAIL_SUBJECT_PREFIX}.mark.{BAD_RESULT_MARK}.>",
    f"{TRAIL_SUBJECT_PREFIX}.{FORGED_RECORD}.>",
)
"""The trail subjects a new ledger durable follows (an existing durable keeps its own filter)."""


def _what(event: TrailEvent) -> str:
    if event.kind == FORGED_RECORD:
        return "forged"
    return "bad_result" if event.kind == f"mark.{BAD_RESULT_MARK}" else event.kind.removeprefix("task.")


def accountable(event: TrailEvent) -> str | None:
    """The agent an event counts for: the actor, or for a bad-result mark the task's completer."""
    if _what(event) == "bad_result":
        data = event.data if isinstance(event.data, dict) else {}
        agent = data.get("agent")
        return agent if isinstance(agent, str) else None
    return event.agent


def backs(record: TaskRecord | None, event: TrailEvent) -> bool:
    """Whether the task's record shows what ``event`` says its agent did (the board backs it).

    An outcome needs an attempt with that agent, token and outcome; a claim, the agent holding the
    task with that token (or an attempt of that claim, or the note of its decline); a bad-result
    mark, a done task that agent completed. Anyone can write an event; only the board's
    compare-and-set writes make a record."""
    if record is None:
        return False
    what = _what(event)
    if what == "bad_result":
        completer = next((a.agent for a in reversed(record.attempts) if a.outcome == "completed"), None)
        return record.status is TaskStatus.DONE and completer is not None and completer == accountable(event)
    if event.agent is None or event.token is None:
        return False
    # A decline is no attempt: the record keeps a note of each agent's latest one.
    declined = any((d.agent, d.token) == (event.agent, event.token) for d in record.declines)
    if what == "declined":
        return declined
    mine = _its_attempts(record, event)
    if what == "claimed":
        return bool(mine) or declined or (record.holder, record.token) == (event.agent, event.token)
    return any(a.outcome == what for a in mine)


def _its_attempts(record: TaskRecord, event: TrailEvent) -> list[Attempt]:
    """The attempts in ``record`` of the claim ``event`` names (its agent and token)."""
    return [a for a in record.attempts if (a.agent, a.token) == (event.agent, event.token)]


COUNTED_FOR_S = 30 * 24 * 3600.0
"""How long the ledger remembers that it counted an event: longer than a finished record lives by
default (``finished_ttl``, 7 days), so a copy laid later has no record left to back it. Boards that
keep records longer should keep this as long."""


def _deferred(event: TrailEvent) -> bool:
    return isinstance(event.data, dict) and event.data.get("deferred") is True


def _claim_key(event: TrailEvent) -> str:
    """The count key of the ``task.claimed`` event of the claim ``event`` ends."""
    return f"{event.ref}.{event.token}.claimed"


def _as_undeferred(event: TrailEvent) -> TrailEvent:
    data = dict(event.data) if isinstance(event.data, dict) else {}
    data.pop("deferred", None)
    return event.model_copy(update={"data": data})


def _count_key(event: TrailEvent) -> str:
    """What makes an event the same one again: the task, claim and outcome (for a bad-result mark,
    the task and who laid it; for a forgery, the revision)."""
    if _what(event) == "bad_result":
        return f"{event.ref}.bad.{event.by or ANONYMOUS}"
    if _what(event) == "forged":  # one forged revision, whoever reports it
        data = event.data if isinstance(event.data, dict) else {}
        return f"{event.ref}.forged.{data.get('bucket', TASKS_BUCKET)}.{data.get('revision')}"
    return f"{event.ref}.{event.token}.{_what(event)}"


def _vouched(event: TrailEvent, record: TaskRecord) -> TrailEvent:
    """``event`` as the ledger counts it: for the record's capabilities, with the usage its
    attempt in the record reports (never the event's say-so), at no time after now."""
    data = dict(event.data) if isinstance(event.data, dict) else {}
    data["requires"] = list(record.task.requires)
    data.pop("usage", None)
    what = _what(event)
    for attempt in _its_attempts(record, event):
        if attempt.outcome == what and attempt.usage:
            data["usage"] = attempt.usage.model_dump()
    for note in record.declines if what == "declined" else ():
        # The note keeps what its latest decline (that token) spent: an earlier one's is counted
        # only if the ledger reads the record before the next decline of the same agent.
        if (note.agent, note.token) == (event.agent, event.token) and note.usage:
            data["usage"] = note.usage.model_dump()
    return event.model_copy(update={"data": data, "at": min(event.at, utcnow())})


def parse_usage(value: object) -> Usage | None:
    """``value`` (an event's ``data["usage"]``) as a ``Usage``, or None."""
    if not isinstance(value, dict):
        return None
    try:
        return Usage.model_validate(value, context={"wire": True})
    except pydantic.ValidationError:
        return None


def apply(ledger: AgentLedger, event: TrailEvent, *, half_life: float) -> AgentLedger | None:
    """Fold one trail event into an agent's ledger; None when it changes nothing (or was seen)."""
    what = _what(event)
    if what not in COUNTED or event.seq is None or event.seq <= ledger.last_seq:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    requires = data.get("requires")
    capabilities = [str(c) for c in requires] if isinstance(requires, list) else []
    if what == "forged":  # a forger is distrusted for everything it has done, not one capability
        capabilities = sorted({*ledger.scores, ANY_CAPABILITY})
    good, bad = EVIDENCE.get(what, (0.0, 0.0))
    # The outcome of a deferred claim (never written, so never announced) stands for its claim too.
    counted = [what, "claimed"] if data.get("deferred") is True else [what]
    by_capability = dict(ledger.by_capability)
    scores = dict(ledger.scores)
    totals = ledger.totals
    usage = dict(ledger.usage)
    spent = parse_usage(data.get("usage"))
    for cap in capabilities or [ANY_CAPABILITY]:
        if spent:
            usage[cap] = usage.get(cap, Usage()) + spent
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
            "usage": usage,
            "last_seq": event.seq,
            "updated_at": event.at.isoformat(),
        }
    )


def fold(events: Sequence[TrailEvent], ledger: AgentLedger, *, half_life: float) -> AgentLedger | None:
    """``apply`` each of ``events`` in turn; None when none changes anything."""
    changed = None
    for event in events:
        changed = apply(changed or ledger, event, half_life=half_life) or changed
    return changed


_ENDINGS = frozenset(COUNTED) - {"claimed", "bad_result", "forged"}
"""What ends a claim: its attempt's outcome, a decline or a question."""


class _Claims:
    """The ``task.claimed`` events a projection counted whose outcome it has not read yet: an
    outcome whose claim was deferred (no ``task.claimed`` event, as nearly always on the fast path)
    asks ``ants_counted`` whether its claim was counted after all only when that claim may predate
    the projection (``unsure_before``), not once per outcome."""

    LIMIT = 65536
    """Claims remembered at most (beyond them, the oldest are forgotten and the projection is as
    unsure of earlier claims as when it started)."""

    def __init__(self, *, unsure_before: datetime | None) -> None:
        self.unsure_before = unsure_before
        """Attempts begun before this (give or take the clock skew) may have had a claim counted
        by an earlier projection; None when this one read the trail from its start."""
        self._open: dict[str, None] = {}

    def saw(self, claim: TrailEvent) -> None:
        self._open[_claim_key(claim)] = None
        if len(self._open) > self.LIMIT:
            del self._open[next(iter(self._open))]
            self.unsure_before = utcnow()

    def ended(self, outcome: TrailEvent) -> bool:
        """Whether this projection counted the claim ``outcome`` ends (forgotten from here on)."""
        key = _claim_key(outcome)
        if key not in self._open:
            return False
        del self._open[key]
        return True


_LINGER_S = 0.2
"""How long a projection waits for more events after a batch's first: fewer, larger batches (each
agent's entry, the count marks and the records' read once a batch) for a ledger a moment late."""

_READ_TOGETHER = 128
"""Task records a projection reads through one consumer at most (its filter lists each)."""

_POSITION_EVERY_S = 1.0
"""How often a projection writes its position down (a restart counts what came since again, which
changes nothing: each entry knows the last sequence it applied)."""


def _position_key(name: str) -> str:
    """Where projection ``name`` keeps its position in ``ants_counted`` (two tokens: no count key)."""
    return f"position.{name}"


class Ledger:
    """Read and update the per-agent ledger."""

    def __init__(self, nc: Client, *, replicas: int = 1, half_life: float = 3600.0) -> None:
        self._nc = nc
        self._replicas = replicas
        self._half_life = half_life
        self._bucket = Bucket(jetstream(nc), LEDGER_BUCKET)
        self._tasks = Bucket(jetstream(nc), TASKS_BUCKET)
        self._counted = Bucket(jetstream(nc), COUNTED_BUCKET)
        trail, directory = Trail(nc), Directory(nc)
        self._budgets = Budgets(jetstream(nc), replicas=replicas)
        self._seal = Seal(self._tasks, trail, directory, self._budgets, depth=SIGNED_HISTORY)
        self._rates = Rates(jetstream(nc), replicas=replicas)
        self._witness = Witness(trail, directory)
        self._board_signed: bool | None = None
        self._known: dict[str, tuple[int, AgentLedger]] = {}
        """Entries as this process last wrote them (revision, value): a CAS on them needs no read
        first; another writer's change makes the CAS fail, and the entry is read again."""

    async def ensure(self) -> None:
        """Create the buckets unless they exist."""
        js = jetstream(self._nc)
        await ensure_kv(js, LEDGER_BUCKET, replicas=self._replicas, history=1)
        await ensure_kv(js, COUNTED_BUCKET, replicas=self._replicas, history=1, marker_ttl=60.0, atomic=True)

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
        async for key, value in watch_values(jetstream(self._nc), LEDGER_BUCKET, history_only=True):
            found.append(self._parse(key, value))
        return found

    async def watch(self) -> AsyncGenerator[tuple[str, AgentLedger | None], None]:
        """Every agent's ledger entry, then each change as the projection makes it (None: removed)."""
        async with aclosing(watch_entries(jetstream(self._nc), LEDGER_BUCKET)) as entries:
            async for agent, value in entries:
                yield agent, (None if value is None else self._parse(agent, value))

    async def record(self, event: TrailEvent) -> bool:
        """Apply ``event`` to its agent's entry with CAS; True when it changed the ledger."""
        agent = accountable(event)
        if agent is None:
            return False
        return await self._update(agent, functools.partial(fold, [event], half_life=self._half_life))

    async def _update(self, agent: str, change: Callable[[AgentLedger], AgentLedger | None]) -> bool:
        known = self._known.pop(agent, None)
        while True:
            if known is None:
                entry = await self._bucket.get(agent)
                known = (
                    (0, self._parse(agent, None))
                    if entry is None
                    else (entry.revision, self._parse(agent, entry.value))
                )
            revision, current = known
            new = change(current)
            if new is None:
                self._known[agent] = known
                return False
            value = new.model_dump_json().encode()
            try:
                if revision == 0:
                    written = await self._bucket.create(agent, value)
                else:
                    written = await self._bucket.update(agent, value, last=revision)
            except Conflict:
                known = None  # another writer changed it: read it again
                continue
            self._known[agent] = (written, new)
            return True

    async def project(
        self, trail: Trail, *, durable: str = LEDGER_CONSUMER, verifier: Verifier | None = None
    ) -> None:
        """Follow the trail's task events forever, folding them into the ledger in order.

        An event counts only when the board backs it (``backs``: the task's record shows that
        agent's claim or outcome with that token), and only once: a copy laid again later counts
        for nothing (``ants_counted`` remembers what was counted, for ``COUNTED_FOR_S``). What it
        counts for is the record's too: the task's capabilities, never the event's say-so, and no
        time later than now. Others are recorded as ``corrupt.unbacked`` or ``corrupt.replayed``
        and change no score, so nobody can frame an agent, or credit one, by writing events. With a
        ``verifier``, events whose signature does not match their author's announced key are left
        out as well (``corrupt.forged``): each event comes with the message it was read from, and
        its header signature is checked over those bytes, as any client laid them.

        Events come in batches of what arrived within ``_LINGER_S`` of the first, to this
        projection alone (one message an event, nothing acknowledged). A batch's records are read
        together, its count marks written as one atomic batch and each agent's entry once. The
        projection keeps its position in ``ants_counted`` (key ``position.<durable>``, at most a
        second behind; a projection that earlier versions ran on a durable consumer of that name
        goes on from that consumer's position). Replicas each follow the whole trail: applying an
        event is idempotent (each entry remembers the last sequence it applied, and is written
        with compare-and-set), so whichever replica counts an event first counts it once. All
        this is here in the ledger, off the agents' path.
        """
        await self.ensure()
        loop = asyncio.get_running_loop()
        js = jetstream(self._nc)
        trail_now = await patiently(js, "read the trail", functools.partial(js.stream_info, TRAIL_STREAM))
        made = trail_now.created.isoformat() if trail_now.created else "-"
        position = await self._position(durable, made)
        saved, saved_at = position, loop.time() - _POSITION_EVERY_S  # the first is written at once
        # Unsure of claims laid before it started, unless it reads every one there ever was.
        everything = position is None and int(trail_now.state.first_seq or 0) <= 1
        claims = _Claims(unsure_before=None if everything else utcnow())
        following = trail.follow_batches(WATCHED, after=position, linger=_LINGER_S)
        async with aclosing(following) as batches:  # (its consumer is let go when this ends)
            async for events in batches:
                if events:
                    await self._count(trail, events, verifier, claims)
                    position = events[-1].seq
                # Written when a second has passed, or when idle (an empty batch): never far behind.
                if position != saved and (not events or loop.time() - saved_at >= _POSITION_EVERY_S):
                    await self._counted.put(_position_key(durable), f"{position} {made}".encode())
                    saved, saved_at = position, loop.time()

    async def _count(
        self, trail: Trail, events: Sequence[TrailEvent], verifier: Verifier | None, claims: _Claims
    ) -> None:
        """Count ``events`` (in order): each agent's entry written once."""
        counting: dict[str, list[TrailEvent]] = {}
        for counted in await self._counting(trail, events, verifier, claims):
            agent = accountable(counted)
            if agent is not None:
                counting.setdefault(agent, []).append(counted)
        for agent, mine in counting.items():
            if await self._update(agent, functools.partial(fold, mine, half_life=self._half_life)):
                log.debug("ledger.applied", agent=agent, events=len(mine), seq=mine[-1].seq)

    async def _position(self, name: str, made: str) -> int | None:
        """The stream sequence projection ``name`` counted up to in the trail made at ``made``
        (None: from the start)."""
        entry = await self._counted.get(_position_key(name))
        if entry is not None:
            seq, _, on = entry.value.decode(errors="replace").partition(" ")
            if on == made and seq.isdigit():
                return int(seq)
            # The trail was made anew since (its sequences start again): read it from its start.
            log.warning("ledger.position_of_another_trail", name=name, position=seq, made=on, now=made)
            return None
        # Earlier versions followed through a durable consumer of that name: go on from it.
        try:
            info = await jetstream(self._nc).consumer_info(TRAIL_STREAM, name)
        except (nats.errors.Error, nats.js.errors.Error):
            return None
        return int(info.ack_floor.stream_seq or 0) if info.ack_floor else None

    async def _counting(
        self, trail: Trail, events: Sequence[TrailEvent], verifier: Verifier | None, claims: _Claims
    ) -> list[TrailEvent]:
        """Of ``events``, in order, those that count, as they count (``_vouched``); the others are
        laid aside as forged, unbacked or replayed (or not counted at all). Each is marked counted
        in ``ants_counted`` (in one atomic batch when it can be) before any entry is written."""
        heard = []
        for event in events:
            if verifier is not None and await verifier.check(event) == "forged":
                await self._reject(trail, "forged", event)
            elif _what(event) in COUNTED:
                heard.append(event)
        records = await self._records_of([e.ref for e in heard if _what(e) != "forged"])
        backed: list[tuple[TrailEvent, TaskRecord | None]] = []
        for event in heard:
            if _what(event) == "forged":
                if await self._proves_forgery(event):
                    backed.append((event, None))  # (every reader that finds it may say so: counted once)
                else:
                    await self._reject(trail, "unbacked", event)
            elif (record := records.get(event.ref)) is not None and backs(record, event):
                backed.append((event, record))
            else:
                await self._reject(trail, "unbacked", event)
        firsts = await self._first_counts(trail, [event for event, _ in backed])
        counted = []
        for (event, record), first in zip(backed, firsts, strict=True):
            if first:
                counted.append(event if record is None else await self._vouching(event, record, claims))
        return counted

    async def _vouching(self, event: TrailEvent, record: TaskRecord, claims: _Claims) -> TrailEvent:
        """``event`` as it counts: a deferred outcome whose claim's event was counted after all
        (its writer could not tell that it landed) counts for the outcome alone."""
        if _what(event) == "claimed":
            claims.saw(event)
        elif (_what(event) in _ENDINGS and claims.ended(event)) or (
            _deferred(event) and await self._claim_counted(claims, event, record)
        ):
            event = _as_undeferred(event)
        return _vouched(event, record)

    async def _claim_counted(self, claims: _Claims, event: TrailEvent, record: TaskRecord) -> bool:
        """Whether the claim a deferred outcome ends was counted from a ``task.claimed`` event
        this projection may not have read: one laid before it started."""
        started = next((a.started_at for a in _its_attempts(record, event)), None)
        if claims.unsure_before is None or (
            started is not None and started > claims.unsure_before + timedelta(seconds=CLOCK_SKEW_S)
        ):
            return False  # begun after this projection started: its claim's event would be known
        return await self._counted.get(_claim_key(event)) is not None

    async def _first_counts(self, trail: Trail, events: Sequence[TrailEvent]) -> list[bool]:
        """For each of ``events``, whether it is counted the first time (else it is laid aside as
        replayed).

        Its key holds the sequence of the event it counted: the same event again (redelivered
        after a crash, or replayed to rebuild the ledger) goes on; another copy does not. Keys are
        written before the events are applied (all new, as nearly always: one atomic batch): a
        crash in between reads the events again, which then find their own sequences and go on."""
        keys = [(_count_key(event), str(event.seq).encode()) for event in events]
        written = await self._counted.create_many(keys, ttl=COUNTED_FOR_S, least=2)
        firsts = []
        for event, (once, seq), revision in zip(events, keys, written, strict=True):
            counted = None if revision is not None else await self._counted.get(once)
            if counted is not None and counted.value != seq:
                await self._reject(trail, "replayed", event)
            firsts.append(counted is None or counted.value == seq)
        return firsts

    async def _signed(self) -> bool:
        """Whether the board is signed (its tasks stream says so; asked once)."""
        if self._board_signed is None:
            config = await stream_config(jetstream(self._nc), f"KV_{TASKS_BUCKET}")
            if config is None:
                return False  # no board yet: ask again later
            self._board_signed = is_signed(config)
        return self._board_signed

    async def _proves_forgery(self, event: TrailEvent) -> bool:
        """Whether the ledger's own judgement of the revision a ``corrupt.forged_record`` names
        finds it forged, by a key of the agent the event blames (nobody frames another by laying
        one). The revision is counted once: the event's message id is per revision."""
        data = event.data if isinstance(event.data, dict) else {}
        revision, bucket = data.get("revision"), data.get("bucket", TASKS_BUCKET)
        if not isinstance(revision, int) or not is_valid_id(event.ref) or not await self._signed():
            return False
        if bucket == TASKS_BUCKET:
            forgery = await self._seal.forged_at(event.ref, revision)
            return forgery is not None and forgery.agent is not None and forgery.agent == event.agent
        if bucket == BUDGETS_BUCKET:
            found = await self._budgets.forged_at(event.ref, revision)
        elif bucket == RATES_BUCKET:
            found = await self._rates.forged_at(event.ref, revision)
        else:
            return False
        agent = await self._witness.agent_of(found.link.signer) if found is not None else None
        return agent is not None and agent == event.agent

    async def _records_of(self, task_ids: Sequence[str]) -> dict[str, TaskRecord | None]:
        """The records of ``task_ids`` (None: none, or not one): on an unsigned board the last
        revision of each, read together through one consumer (one message a record); on a
        signed board each judged as its chain says."""
        wanted = sorted({task_id for task_id in task_ids if is_valid_id(task_id)})
        if len(wanted) < 2 or await self._signed():
            return {task_id: await self._record_of(task_id) for task_id in wanted}
        found: dict[str, TaskRecord | None] = {}
        js = jetstream(self._nc)
        for start in range(0, len(wanted), _READ_TOGETHER):
            chunk = wanted[start : start + _READ_TOGETHER]
            subjects = [self._tasks.subject(task_id) for task_id in chunk]
            try:
                last = await last_of_each(js, self._tasks.stream, subjects, action="read task records")
            except AntsError as exc:  # (e.g. no quorum for a moment: the reads one by one are patient)
                log.info("ledger.read_together_failed", error=str(exc))
                last = {}
            for task_id, subject in zip(chunk, subjects, strict=True):
                msg = last.get(subject)
                if msg is None:  # (none, or it did not come in time: asked alone)
                    found[task_id] = await self._record_of(task_id)
                elif not is_tombstone(msg.headers):
                    found[task_id] = stored_record(task_id, msg.data)
        return found

    async def _record_of(self, task_id: str) -> TaskRecord | None:
        if not is_valid_id(task_id):
            return None
        if await self._signed():
            with contextlib.suppress(CorruptEntry):
                _, legal, _ = await self._seal.legal(task_id)
                return legal.record if legal is not None else None
            return None
        entry = await self._tasks.get(task_id)
        return None if entry is None else stored_record(task_id, entry.value)

    async def _reject(self, trail: Trail, why: str, event: TrailEvent) -> None:
        """Leave an event out of the ledger, saying so on the trail."""
        log.warning(
            f"ledger.{why}_event", kind=event.kind, agent=accountable(event), by=event.by, seq=event.seq
        )
        data: JsonValue = {"kind": event.kind, "task": event.ref, "agent": accountable(event), "by": event.by}
        # (replicas each read the trail: the same report from each is stored once)
        report = TrailEvent(kind=f"corrupt.{why}", ref=str(event.seq), data=data)
        await trail.emit(report, msg_id=f"corrupt.{why}-{event.seq}")


__all__ = ["Ledger", "accountable", "apply"]
