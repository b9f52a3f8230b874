"""Signed revisions: on a signed board every revision of a task record is signed by its writer,
and every reader checks that the change from the previous revision is one that signer may make.

No process decides who is right: each reader judges the key's history for itself. The rules
(``judge``), for a task whose owner (``owner_key``) signed its creation:

- the owner may make any change but to the task's definition and its own key: cancel, retry,
  delete, answer, compact;
- a claimant claims only for itself (``holder_key`` its own key) with the previous revision as its
  token, a task that is pending and ready; a deferred outcome (claim and end in one write) is the
  same, with its attempt (or decline note) signed by the claimant;
- only the holder named with that token settles, heartbeats, asks or lets go;
- anyone may end a claim whose lease ran out (the expired attempt is the holder's own), answer a
  question, fail an unclaimed task whose deadline or question has passed, whose dependency ended
  badly, or that asked to fail unroutable; and keep the bookkeeping: dependents, unroutable
  marks, and removing from ``waiting_on`` a dependency that is done;
- a decline note is only ever written by its own agent (others may only drop it);
- nobody else changes anything, and nothing unsigned is legal.

A revision that breaks them is forged: readers use the last legal revision instead, write it back
(its exact bytes and its signer's signature, so it stays legal), lay ``corrupt.forged_record``
naming the signer, and the ledger counts it against that agent. The previous revision of each
write is the one the server checked it against (``Nats-Expected-Last-Subject-Sequence``, kept in
the stored message), so the history is a chain no writer can bend. A key whose history was erased
(a rollup or purge) is judged against the trail: ``task.submitted`` carries the owner's signed
creation record, which is restored if the erasure was not the owner's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.js.api import RawStreamMsg, StreamConfig

from .._store import Bucket
from ..cards import Directory
from ..errors import CorruptEntry
from ..identity import SIG_HEADER, SIGNER_HEADER, header, signing_input, verify
from ..models import Attempt, TaskRecord, TaskStatus, parse_or_none, utcnow, wire_bytes
from ..names import is_valid_id
from ..trail import Trail
from .budget import Budgets
from .chain import Chain, LegalCache, link_of, signed_part, walk

SIGNED_METADATA = "ants_signed"
"""Metadata key of the ``ants_tasks`` stream: ``"true"`` on a signed board."""
SIGNED_HISTORY = 32
"""Revisions a signed board keeps per task (at least): the chain its readers judge."""


def is_signed(tasks: StreamConfig) -> bool:
    """Whether the board whose ``ants_tasks`` stream is configured so is a signed one."""
    return (tasks.metadata or {}).get(SIGNED_METADATA) == "true"


CLOCK_SKEW = timedelta(seconds=5)
"""How far a writer's clock may run ahead of the server's when it fails a task for a time passed."""
BLOCKED = "blocked: "
"""How the error of a task failed for a dependency begins (``propagate.block``)."""
_ABLE_SEEN_MAX = 4096

_CLAIM_FIELDS = (
    "status",
    "holder",
    "holder_key",
    "token",
    "claimed_at",
    "ticket",
    "attempts",
    "result",
    "result_ref",
    "error",
    "questions",
    "budget_from",
)
"""What a claim and its end change: the holder's part of a record."""
_OPEN_FIELDS = ("dependents", "finished_dependents", "unroutable", "unroutable_reason", "updated_at", "v")
"""Bookkeeping anyone may keep (none of it changes an outcome)."""


@dataclass(frozen=True)
class Verdict:
    """Whether a revision is legal, and what must hold of other tasks for it to be."""

    illegal: str | None = None
    """Why the revision is forged (None: legal, given ``done``)."""
    done: tuple[str, ...] = ()
    """Dependencies that must be done (removed from ``waiting_on``)."""
    ended_badly: tuple[str, ...] = ()
    """Dependencies of which at least one must have ended without being done."""
    able: tuple[str, str] | None = None
    """(agent, key) that must have announced, signed with that key, that it can take the task."""
    budget_spent: bool = False
    """The task's budget must let nothing more be spent."""
    revived: bool = False
    """None of its dependencies may have ended without being done (a blocked task put back)."""


LEGAL = Verdict()


def judge(
    before: TaskRecord | None, after: TaskRecord | None, signer: str | None, *, prev: int, now: datetime
) -> Verdict:
    """Whether ``signer`` may turn ``before`` (the last legal state; None: no task) into ``after``
    (None: deleted), written over revision ``prev``, at ``now``. See the module's rules."""
    if after == before:
        return LEGAL  # nothing changes (a legal revision written back over a forged one)
    if before is None:
        if after is None:
            return LEGAL
        if signer is None or after.owner_key != signer:
            return Verdict("created without its owner's signature")
        if after.holder or after.attempts or after.status not in (TaskStatus.PENDING, TaskStatus.FAILED):
            return Verdict("created as already worked on")
        return LEGAL
    owner = before.owner_key
    if after is None:
        return LEGAL if signer is not None and signer == owner else Verdict("deleted, not by its owner")
    if signer is None:
        return _answer(before, after) or Verdict("unsigned")
    if after.task != before.task or after.owner_key != owner:
        return Verdict("changes the task's definition or owner")
    if signer == owner:
        return LEGAL
    if after.attempts[: len(before.attempts)] != before.attempts:
        return Verdict("rewrites past attempts")
    if not _declines_own(before, after, signer):
        return Verdict("writes a decline note of another agent")
    if not set(after.waiting_on) <= set(before.waiting_on):
        return Verdict("adds dependencies")
    done = tuple(sorted(set(before.waiting_on) - set(after.waiting_on)))
    if all(getattr(after, name) == getattr(before, name) for name in _CLAIM_FIELDS):
        return Verdict(done=done)
    verdict = _claim_change(before, after, signer, prev=prev, now=now)
    return Verdict(
        verdict.illegal,
        done=done + verdict.done,
        ended_badly=verdict.ended_badly,
        able=verdict.able,
        budget_spent=verdict.budget_spent,
        revived=verdict.revived,
    )


def _answer(before: TaskRecord, after: TaskRecord) -> Verdict | None:
    """LEGAL when ``after`` only answers ``before``'s open question (anyone may, signed or not)."""
    if before.status is not TaskStatus.WAITING_INPUT or after.status is not TaskStatus.PENDING:
        return None
    if not before.questions or len(after.questions) != len(before.questions):
        return None
    asked, given = before.questions[-1], after.questions[-1]
    unchanged = asked.model_copy(update={"answer": None, "answered_by": None, "answered_at": None})
    answered = given.model_copy(update={"answer": None, "answered_by": None, "answered_at": None})
    same = after.model_copy(
        update={"status": before.status, "error": before.error, "questions": before.questions}
    )
    answers = asked.answer is None and given.answer is not None and unchanged == answered
    return LEGAL if answers and _same_but_bookkeeping(before, same) else None


def _same_but_bookkeeping(before: TaskRecord, after: TaskRecord) -> bool:
    return after.model_copy(update={name: getattr(before, name) for name in _OPEN_FIELDS}) == before


def _declines_own(before: TaskRecord, after: TaskRecord, signer: str) -> bool:
    """Whether every decline note ``after`` adds or changes is the signer's own."""
    kept = set(before.declines)
    return all(note.key == signer for note in after.declines if note not in kept)


def _claim_change(before: TaskRecord, after: TaskRecord, signer: str, *, prev: int, now: datetime) -> Verdict:
    """Judge a change of the holder's part by a signer who is not the owner."""
    new = after.attempts[len(before.attempts) :]
    if before.status is TaskStatus.CLAIMED and signer == before.holder_key:
        return _ending(before, after, new, before.holder or "", signer)  # settles, asks or lets go
    state = before
    if before.status is TaskStatus.CLAIMED:
        # Anyone may end a claim whose lease ran out: the first new attempt is the holder's, expired.
        if not new or (new[0].agent, new[0].token, new[0].outcome, new[0].key) != (
            before.holder,
            before.token,
            "expired",
            before.holder_key,
        ):
            return Verdict("changes a claim it does not hold")
        new = new[1:]
        state = before.model_copy(
            update={
                "attempts": after.attempts[: len(before.attempts) + 1],
                "status": TaskStatus.PENDING,
                "holder": None,
                "holder_key": None,
                "ticket": None,
            }
        )
        if after.status is TaskStatus.PENDING and after.holder is None and not new:
            return LEGAL
        spent = state.counted_attempts >= state.task.max_attempts
        if after.status is TaskStatus.DEAD and not new and spent:
            return LEGAL  # that was its last attempt
    if state.status is TaskStatus.WAITING_INPUT:
        if _answer(state, after) is not None:
            return LEGAL
        due = state.questions[-1].until if state.questions else None
        if after.status is TaskStatus.FAILED and due is not None and now + CLOCK_SKEW >= due and not new:
            return LEGAL  # its question went unanswered
        return Verdict("changes a task waiting for an answer")
    blocked = state.status is TaskStatus.FAILED and (state.error or "").startswith(BLOCKED)
    if blocked and after.status is TaskStatus.PENDING and after.error is None and not new:
        return Verdict(revived=True)  # blocked by a dependency that has been retried since
    if state.status is not TaskStatus.PENDING or state.holder is not None:
        return Verdict("changes a finished task")
    # A claim's token is a revision read since the last claim: fenced by the CAS, and a claim
    # retried after someone else's bookkeeping keeps the token it read first.
    floor, token = state.token or 0, after.token or 0
    fenced = floor < token <= prev and not state.waiting_on
    if after.status is TaskStatus.CLAIMED:
        if after.holder_key == signer and fenced and not new:
            return LEGAL  # a claim for itself
        return Verdict("claims for another, or with a stale token")
    if after.holder is None and fenced:
        if len(new) == 1 and new[0].key == signer and new[0].token == token:
            return _ending(state, after, new, new[0].agent, signer)  # a deferred claim, ended at once
        unchanged = (after.result, after.result_ref) == (state.result, state.result_ref)
        declined = any(n.key == signer and n.token == token for n in after.declines)
        if not new and declined and unchanged and after.status is TaskStatus.PENDING:
            return LEGAL  # a deferred decline (an agent may decline what it cannot take)
    if after.status in (TaskStatus.FAILED, TaskStatus.DEAD) and not new and after.holder is None:
        deadline = state.task.deadline
        if deadline is not None and now + CLOCK_SKEW > deadline:
            return LEGAL
        if state.task.fail_unroutable and state.unroutable_reason is not None:
            return LEGAL
        if state.waiting_on:
            return Verdict(ended_badly=state.waiting_on)
        if state.task.budget is not None:
            return Verdict(budget_spent=True)
    return Verdict("changes a task it did not claim")


def _ending(
    state: TaskRecord, after: TaskRecord, new: tuple[Attempt, ...], agent: str, signer: str
) -> Verdict:
    """A claim's end (or its keeping) by its holder: its attempts are its own, a result comes only
    with a completion, which only an agent that announced it can take the task may write, and
    only the owner cancels."""
    if any((a.agent, a.key) != (agent, signer) for a in new):
        return Verdict("ends a claim with another's attempt")
    completed = any(a.outcome == "completed" for a in new)
    if after.status is TaskStatus.CANCELLED:
        return Verdict("cancels a task it does not own")
    if (after.status is TaskStatus.DONE) != completed:
        return Verdict("says done without a completed attempt, or completes without saying done")
    if not completed and (after.result, after.result_ref) != (state.result, state.result_ref):
        return Verdict("writes a result without completing")
    return Verdict(able=(agent, signer)) if completed else LEGAL


@dataclass(frozen=True)
class Revision:
    """One stored revision of a task key, as a reader judges it."""

    seq: int
    record: TaskRecord | None
    """The value (None: a deletion, or garbage)."""
    payload: bytes
    signature: dict[str, str]
    """The signature headers as stored (empty: unsigned)."""
    signer: str | None
    """``Ants-Signer`` when its signature verifies over the stored subject and bytes."""
    prev: int | None
    """The revision it was written over (None: written unconditionally)."""
    erases: bool
    """A rollup or purge: the history before it is gone."""
    time: datetime | None = None
    """When the server stored it."""
    garbage: bool = False
    """Not a record of this task at all."""


def revision_of(msg: RawStreamMsg, subject: str) -> Revision:
    """``msg`` (a message of a task key on ``subject``) as a ``Revision``."""
    return stored_revision(subject, int(msg.seq or 0), msg.headers, msg.data or b"", msg.time)


def stored_revision(
    subject: str, seq: int, headers: dict[str, str] | None, payload: bytes, time: datetime | None
) -> Revision:
    """The message stored at ``seq`` on ``subject`` (a task key) as a ``Revision``."""
    link = link_of(subject, seq, headers, payload, time)
    record = None
    garbage = False
    if not link.deleted:
        record = parse_or_none(TaskRecord, payload, where=subject)
        garbage = record is None or not subject.endswith("." + record.task.id)
        record = None if garbage else record
    return Revision(
        seq=seq,
        record=record,
        payload=payload,
        signature=link.signature,
        signer=link.signer,
        prev=link.prev,
        erases=link.erases,
        time=time,
        garbage=garbage,
    )


def _keys_named(record: TaskRecord) -> dict[str, str]:
    """The public keys ``record`` binds to agents, and whose they are."""
    named = {a.key: a.agent for a in record.attempts if a.key}
    named.update({n.key: n.agent for n in record.declines if n.key})
    if record.holder_key and record.holder:
        named[record.holder_key] = record.holder
    if record.owner_key:
        named[record.owner_key] = record.task.created_by
    return named


@dataclass(frozen=True)
class Forgery:
    """A revision judged forged: who signed it (key, and agent when known) and why."""

    revision: Revision
    why: str
    key: str | None
    agent: str | None


class Seal:
    """One reader's judge of a signed board's task keys: reads the last legal revision of a key,
    restoring it over forged ones. Keeps what it has judged (``LegalCache``), so a reader that
    follows a task pays for what changed since it last looked."""

    def __init__(
        self, bucket: Bucket, trail: Trail, directory: Directory, budgets: Budgets, *, depth: int
    ) -> None:
        self._bucket = bucket
        self._budgets = budgets
        self._trail = trail
        self._directory = directory
        self._depth = depth
        self.known: LegalCache[Revision] = LegalCache()
        self._able_seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
        self._judging: set[str] = set()

    def wrote(self, task_id: str, revision: Revision) -> None:
        """Remember a revision this reader wrote itself (legal by construction)."""
        self.known.put(task_id, revision)

    async def next_legal(self, task_id: str, revision: Revision) -> Revision | None:
        """``revision`` (a change a watch delivered) judged against the last legal revision this
        reader knows, when it was written over that one, or legal on its own (its owner's); None
        when it cannot be judged so (read the key instead) or is forged (the read restores it)."""
        known = self.known.get(task_id)
        if known is not None and known.seq == revision.seq and known.payload == revision.payload:
            return known
        if known is None or revision.prev != known.seq or revision.erases:
            return None
        if await self._why_forged(known, revision) is not None:
            return None
        self.known.put(task_id, revision)
        return revision

    async def legal(self, task_id: str) -> tuple[Revision | None, Revision | None, list[Forgery]]:
        """The key's last revision, its last legal one (None: no task), and the forged ones above it."""
        msg = await self._bucket.last(task_id)
        if msg is None:
            return None, None, []
        top = revision_of(msg, self._bucket.subject(task_id))
        known = self.known.get(task_id)
        if known is not None and known.seq == top.seq and known.payload == top.payload:
            return top, known, []
        chain = await walk(self._bucket, task_id, top, known, depth=self._depth, read=revision_of)
        legal, forged = await self._fold(task_id, chain)
        if legal is not None and legal.record is not None and legal.seq == top.seq:
            self.known.put(task_id, legal)
        return top, legal, forged

    async def _fold(self, task_id: str, chain: Chain[Revision]) -> tuple[Revision | None, list[Forgery]]:
        todo = list(reversed(chain.revisions))
        legal: Revision | None = chain.anchor
        if legal is None and todo:
            first = todo[0]
            record = first.record
            if chain.erased:
                # History overflowed what the bucket keeps: the oldest kept revision stands when it
                # was written by a compare-and-set and signed by a key it names. A plain put or an
                # erasure is no honest write: the owner's creation is restored instead.
                conditional = first.prev is not None and not first.erases
                trusted = conditional and record is not None and first.signer in _keys_named(record)
                if trusted:
                    # The history before it overflowed what the bucket keeps: take it as it stands.
                    legal, todo = first, todo[1:]
                else:
                    legal = await self._creation(task_id)
                    if legal is None:
                        raise CorruptEntry(
                            f"task {task_id!r} is quarantined: its history was erased and the trail "
                            "holds no signed creation of it, so its state cannot be proven"
                        )
        forged: list[Forgery] = []
        for revision in todo:
            why = await self._why_forged(legal, revision)
            if why is None:
                legal = revision
            else:
                forged.append(await self._forgery(revision, why, legal))
        return legal, forged

    async def forged_at(self, task_id: str, revision: int) -> Forgery | None:
        """The forgery at ``revision`` of ``task_id``, judged afresh from the history below it;
        None when that revision is legal, or no longer kept."""
        subject = self._bucket.subject(task_id)
        msg = await self._bucket.at(revision)
        if msg is None or msg.subject != subject:
            return None
        chain = await walk(
            self._bucket, task_id, revision_of(msg, subject), None, depth=self._depth, read=revision_of
        )
        _, forged = await self._fold(task_id, chain)
        return next((f for f in forged if f.revision.seq == revision), None)

    async def _why_forged(self, legal: Revision | None, revision: Revision) -> str | None:
        if revision.garbage:
            return "not a record of this task"
        before = legal.record if legal is not None else None
        verdict = judge(
            before, revision.record, revision.signer, prev=revision.prev or 0, now=revision.time or utcnow()
        )
        if verdict.illegal is not None:
            return verdict.illegal
        for dep in verdict.done:
            if await self._status(dep) is not TaskStatus.DONE:
                return f"unblocks it on {dep!r}, which is not done"
        if verdict.able is not None and not await self._able(*verdict.able, revision.record):
            return f"taken by {verdict.able[0]!r}, which never announced with that key that it can take it"
        spent = (
            verdict.budget_spent and before is not None and await self._budgets.spent_for(before, signed=True)
        )
        if verdict.budget_spent and not spent:
            return "fails it for a budget with something left"
        if verdict.revived and before is not None:
            for dep in before.waiting_on:
                status = await self._status(dep)
                if status is not None and status.terminal and status is not TaskStatus.DONE:
                    return f"puts it back while {dep!r} is still {status.value}"
        if verdict.ended_badly:
            ended = [await self._status(dep) for dep in verdict.ended_badly]
            if not any(s is not None and s.terminal and s is not TaskStatus.DONE for s in ended):
                return "fails it for a dependency that did not fail"
        return None

    async def _able(self, agent: str, key: str, record: TaskRecord | None) -> bool:
        """Whether ``agent`` announced on the trail (``agent.joined`` or ``agent.changed``, signed
        by ``key``) capabilities and kinds that take ``record``'s task. Cards expire; these stay."""
        if record is None or not is_valid_id(agent):
            return False
        task = record.task
        seen = (agent, key, task.kind, task.requires)
        if seen in self._able_seen:
            return True
        for kind in ("agent.joined", "agent.changed"):
            event = await self._trail.last(kind, agent)
            stored = event.stored if event is not None else None
            if event is None or stored is None or event.by != agent:
                continue
            subject, payload, headers = stored
            sig = header(headers, SIG_HEADER)
            if header(headers, SIGNER_HEADER) != key or sig is None:
                continue
            if not verify(key, signing_input(subject, payload), sig):
                continue
            data = event.data if isinstance(event.data, dict) else {}
            capabilities, kinds = data.get("capabilities"), data.get("kinds")
            if not isinstance(capabilities, list) or not set(task.requires) <= set(capabilities):
                continue
            if kinds is None or (isinstance(kinds, list) and task.kind in kinds):
                if len(self._able_seen) > _ABLE_SEEN_MAX:
                    self._able_seen.clear()
                self._able_seen.add(seen)
                return True
        return False

    async def _status(self, task_id: str) -> TaskStatus | None:
        """The legal status of ``task_id`` (None: no such task, or one being judged already: a
        cycle of dependencies proves nothing)."""
        if task_id in self._judging:
            return None
        self._judging.add(task_id)
        try:
            _, legal, _ = await self.legal(task_id)
        finally:
            self._judging.discard(task_id)
        return legal.record.status if legal is not None and legal.record is not None else None

    async def _forgery(self, revision: Revision, why: str, legal: Revision | None) -> Forgery:
        # Who holds the key, by what it cannot have written itself: the legal record, the live cards.
        key = revision.signer
        agent = None
        if key is not None:
            agent = _keys_named(legal.record).get(key) if legal is not None and legal.record else None
            agent = agent or await self._directory.announcing(key)
        return Forgery(revision, why, key, agent)

    async def _creation(self, task_id: str) -> Revision | None:
        """The owner's signed creation record of ``task_id``, as ``task.submitted`` carries it."""
        event = await self._trail.last("task.submitted", task_id, first=True)
        data = event.data if event is not None and isinstance(event.data, dict) else {}
        proof, sig = data.get("record"), data.get("sig")
        record = parse_or_none(TaskRecord, json.dumps(proof).encode(), where=f"trail of {task_id}")
        if record is None or record.owner_key is None or not isinstance(sig, str):
            return None
        payload = wire_bytes(record)
        subject = self._bucket.subject(task_id)
        if not verify(record.owner_key, signing_input(subject, signed_part(0, payload)), sig):
            return None
        return Revision(
            seq=0,
            record=record,
            payload=payload,
            signature={SIGNER_HEADER: record.owner_key, SIG_HEADER: sig},
            signer=record.owner_key,
            prev=0,
            erases=False,
        )
