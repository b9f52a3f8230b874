"""Chains of signed revisions: what lets every reader of a signed board check a key's history.

Every write on a signed board is a compare-and-set. The server keeps the revision it was checked
against (``Nats-Expected-Last-Subject-Sequence``) in the stored message, and the writer signs the
subject, that revision and the bytes. A key's history is then a chain no writer can bend: a reader
walks it back from the last revision to one it can trust (one it judged before, or the key's
creation) and judges each step forward. Task records are judged so by ``seal``; budgets and rate
windows, keys that only count up, by ``Tally`` with the rules of their own module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from pydantic import JsonValue

from .._store import Bucket, Conflict, ensure_kv, is_tombstone, stream_config
from ..cards import Directory
from ..identity import SIG_HEADER, SIGNER_HEADER, Identity, header, signing_input, verify
from ..log import get_logger
from ..models import TrailEvent
from ..names import FORGED_RECORD
from ..trail import Trail

log = get_logger("chain")

EXPECTED_HEADER = "Nats-Expected-Last-Subject-Sequence"
TALLY_DEPTH = 32
"""Revisions a signed board keeps of each budget and rate window: the chain its readers judge."""
CHAINED_METADATA = "ants_chained"
"""Metadata of a bucket made on a signed board to keep chains (``"true"``): it keeps
``depth`` revisions a key and refuses rollups and per-message TTLs, so no writer can erase a
key's history and start it anew."""
ROLLUP_HEADER = "Nats-Rollup"


def signed_part(prev: int, payload: bytes) -> bytes:
    """What a revision's signature covers after its subject: the revision it is written over, a
    newline, and its bytes (``identity.signing_input(subject, signed_part(...))``). Bound to its
    place in the key's history, a revision cannot be replayed elsewhere."""
    return f"{prev}\n".encode() + payload


def sign_revision(identity: Identity, subject: str, prev: int, payload: bytes) -> dict[str, str]:
    """The headers that sign ``payload`` written on ``subject`` over revision ``prev``."""
    return identity.sign_message(subject, signed_part(prev, payload))


@dataclass(frozen=True)
class Link:
    """One stored revision of a key, as a reader finds it."""

    seq: int
    payload: bytes
    signature: dict[str, str]
    """The signature headers as stored (empty: unsigned)."""
    signer: str | None
    """``Ants-Signer`` when its signature verifies over the stored subject, ``prev`` and bytes."""
    prev: int | None
    """The revision it was written over (None: written unconditionally)."""
    erases: bool
    """A rollup or purge: the history before it is gone."""
    deleted: bool
    """A deletion (or purge): the key has no value after it."""
    time: datetime | None = None
    """When the server stored it."""


def link_of(
    subject: str, seq: int, headers: dict[str, str] | None, payload: bytes, time: datetime | None
) -> Link:
    """The message stored at ``seq`` on ``subject`` as a ``Link``."""
    headers = headers or {}
    key = header(headers, SIGNER_HEADER)
    sig = header(headers, SIG_HEADER)
    expected = headers.get(EXPECTED_HEADER)
    prev = int(expected) if expected and expected.isdigit() else None
    # A revision whose signature was made over another place in the history (a copy of a legal
    # one written back over a forgery, or a replay) verifies for nobody: judged as unsigned.
    signed = (
        prev is not None
        and key
        and sig
        and verify(key, signing_input(subject, signed_part(prev, payload)), sig)
    )
    return Link(
        seq=seq,
        payload=payload,
        signature={SIGNER_HEADER: key, SIG_HEADER: sig} if key and sig else {},
        signer=key if signed else None,
        prev=prev,
        erases=ROLLUP_HEADER in headers or headers.get("KV-Operation") == "PURGE",
        deleted=is_tombstone(headers),
        time=time,
    )


def read_link(msg: RawStreamMsg, subject: str) -> Link:
    """``msg`` (a message on ``subject``) as a ``Link``."""
    return link_of(subject, int(msg.seq or 0), msg.headers, msg.data or b"", msg.time)


class Linked(Protocol):
    """What walking a chain needs of a revision."""

    @property
    def seq(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def prev(self) -> int | None: ...
    @property
    def erases(self) -> bool: ...


R = TypeVar("R", bound=Linked)
S = TypeVar("S")
T = TypeVar("T")


@dataclass
class Chain(Generic[R]):
    """What a reader found walking a key's history back from its last revision."""

    revisions: list[R] = field(default_factory=list)
    """Newest first."""
    anchor: R | None = None
    """A revision known legal (judged before by this reader), where the walk stopped."""
    erased: bool = False
    """The walk ran into history the bucket no longer keeps, or an erasure (no anchor found)."""


class LegalCache(Generic[T]):
    """What a reader last judged legal of each key (bounded, least recently used out)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._known: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        found = self._known.get(key)
        if found is not None:
            self._known.move_to_end(key)
        return found

    def put(self, key: str, value: T) -> None:
        self._known[key] = value
        self._known.move_to_end(key)
        while len(self._known) > self._size:
            self._known.popitem(last=False)


async def walk(
    bucket: Bucket, key: str, top: R, known: R | None, *, depth: int, read: Callable[[RawStreamMsg, str], R]
) -> Chain[R]:
    """The revisions of ``key`` from ``top`` back to one legal on its own: ``known`` (the last
    legal one this reader knows) or the key's creation; at most ``depth`` back. ``read`` turns a
    stored message into a revision."""
    chain = Chain(revisions=[top])
    subject = bucket.subject(key)
    current = top
    while True:
        if known is not None and current.seq == known.seq and current.payload == known.payload:
            chain.revisions.pop()
            chain.anchor = known
            return chain
        if current.prev == 0 and not current.erases:
            return chain  # written on a key that never had a value: its creation
        if current.prev is None or current.erases or len(chain.revisions) > depth:
            chain.erased = True
            return chain
        msg = await bucket.at(current.prev)
        if msg is None or msg.subject != subject:
            chain.erased = True
            return chain
        current = read(msg, subject)
        chain.revisions.append(current)


class Rules(ABC, Generic[S]):
    """What a key that only counts up may become, step by step (a budget's spending, a rate
    window), and what a reader takes its state to be where it cannot see the history."""

    @abstractmethod
    def creation(self) -> S:
        """The state of a key that never had a value."""

    @abstractmethod
    def erased(self, link: Link) -> S:
        """The state after ``link`` erased (or overflowed) history no reader can see: the safe
        side (nothing more to spend, say)."""

    @abstractmethod
    def adopted(self, link: Link) -> S | None:
        """The state ``link`` holds, taken as it stands (the oldest revision kept, signed, its
        history overflowed); None when it holds none."""

    @abstractmethod
    def step(self, before: S, after: Link) -> S | str:
        """The state ``after`` makes of ``before`` when its signer may write it, else why not."""

    def floor(self, state: S, known: S) -> S:
        """``state`` (read past a flooded history) raised to what this reader knew legal before
        (``known``): the key only counts up, so nothing it had counted can be less now."""
        return state


@dataclass(frozen=True)
class Forged:
    """A revision judged forged, and why."""

    link: Link
    why: str


@dataclass(frozen=True)
class Tallied(Generic[S]):
    """A key of a tally as its reader judged it."""

    top: Link | None
    """The last revision (None: the key never had a value)."""
    state: S
    """Its state after the last legal revision."""
    legal: Link | None
    """The last legal revision (None: none, or the state is the safe side of an erasure)."""
    forged: list[Forged]
    """Forged revisions above the last legal one, oldest first."""


class Tally(Generic[S]):
    """One reader's judge of a bucket's keys that only count up, by ``Rules``: reads a key's last
    legal state. Remembers what it judged, so a reader pays for what changed since it looked."""

    def __init__(
        self, js: JetStreamContext, bucket: Bucket, *, depth: int, witness: Witness | None = None
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._depth = depth
        self._witness = witness
        self._known: LegalCache[tuple[Link, S]] = LegalCache(1024)
        self._chained: bool | None = None

    async def ensure(self, *, replicas: int, signed: bool) -> None:
        """Create the bucket unless it exists: on a ``signed`` board one that keeps chains
        (``CHAINED_METADATA``), else one revision a key, trusted as it stands."""
        await ensure_kv(
            self._js,
            self._bucket.name,
            replicas=replicas,
            history=self._depth if signed else 1,
            erasable=not signed,
            metadata={CHAINED_METADATA: "true"} if signed else None,
        )

    async def chained(self) -> bool:
        """Whether the bucket was made to keep a chain (``CHAINED_METADATA``; asked once). A
        bucket made before budgets and windows were chains holds unsigned revisions: its keys are
        read as they stand."""
        if self._chained is None:
            config = await stream_config(self._js, self._bucket.stream)
            if config is None:
                return False  # not made yet: ask again later
            self._chained = (config.metadata or {}).get(CHAINED_METADATA) == "true"
        return self._chained

    async def current(self, key: str, rules: Rules[S], *, judged: bool) -> tuple[S, int]:
        """The state of ``key`` and the revision a write goes over: ``judged`` (a signed board)
        and the bucket keeps chains, as ``settled``; else as it stands."""
        if judged and await self.chained():
            return await self.settled(key, rules)
        msg = await self._bucket.last(key)
        found = None if msg is None else rules.adopted(read_link(msg, self._bucket.subject(key)))
        return (rules.creation() if found is None else found), 0 if msg is None else int(msg.seq or 0)

    async def write(
        self, key: str, state: S, value: bytes, *, last: int, signer: Identity | None, signed: bool
    ) -> int:
        """CAS ``value`` (``state``'s bytes) over revision ``last``, signed by ``signer`` on a
        ``signed`` board (and remembered as judged); its new revision, or ``Conflict``."""
        headers = sign_revision(signer, self._bucket.subject(key), last, value) if signed and signer else {}
        seq = await self._bucket.update(key, value, last=last, headers=headers or None)
        if signed:
            key_of = signer.public_key if signer else None
            self.wrote(key, Link(seq, value, headers, key_of, last, False, False), state)
        return seq

    async def settled(self, key: str, rules: Rules[S]) -> tuple[S, int]:
        """The state of ``key`` after its last legal revision, written back over forged ones
        (a copy that changes nothing, so it stays legal), which are reported; and the revision a
        write goes over next."""
        while True:
            tallied = await self.read(key, rules)
            top, legal = tallied.top, tallied.legal
            last = top.seq if top is not None else 0
            if not tallied.forged or top is None or tallied.forged[-1].link.seq != top.seq:
                # Forgeries under a legal last revision were reported by whoever wrote it.
                return tallied.state, last
            if legal is not None:
                try:
                    if legal.deleted:  # its owner deleted it: deleted it stays
                        await self._bucket.delete(key, last=top.seq, headers=legal.signature)
                    else:
                        last = await self._bucket.update(
                            key, legal.payload, last=top.seq, headers=legal.signature
                        )
                        copy = Link(last, legal.payload, legal.signature, None, top.seq, False, False)
                        self.wrote(key, copy, tallied.state)
                except Conflict:
                    continue  # written meanwhile: judge again
            if self._witness is not None:
                for found in tallied.forged:
                    await self._witness.forged(self._bucket, key, found, legal.seq if legal else None)
            if legal is not None and legal.deleted:
                continue  # a deletion says not its revision: read it back
            return tallied.state, last

    async def read(self, key: str, rules: Rules[S]) -> Tallied[S]:
        """The state of ``key`` after its last legal revision, and the forged ones above it."""
        msg = await self._bucket.last(key)
        if msg is None:
            return Tallied(None, rules.creation(), None, [])
        top = read_link(msg, self._bucket.subject(key))
        known = self._known.get(key)
        chain = await walk(
            self._bucket, key, top, known[0] if known else None, depth=self._depth, read=read_link
        )
        tallied = self._fold(chain, rules, known)
        if tallied.legal is not None and tallied.legal.seq == top.seq:
            self._known.put(key, (tallied.legal, tallied.state))
        return tallied

    async def forged_at(self, key: str, revision: int, rules: Rules[S]) -> Forged | None:
        """The forgery at ``revision`` of ``key``, judged afresh from the history below it; None
        when that revision is legal, or no longer kept."""
        subject = self._bucket.subject(key)
        msg = await self._bucket.at(revision)
        if msg is None or msg.subject != subject:
            return None
        top = read_link(msg, subject)
        chain = await walk(self._bucket, key, top, None, depth=self._depth, read=read_link)
        return next((f for f in self._fold(chain, rules, None).forged if f.link.seq == revision), None)

    def wrote(self, key: str, link: Link, state: S) -> None:
        """Remember a revision this reader wrote itself (legal by construction)."""
        self._known.put(key, (link, state))

    def _fold(self, chain: Chain[Link], rules: Rules[S], known: tuple[Link, S] | None) -> Tallied[S]:
        todo = list(reversed(chain.revisions))
        forged: list[Forged] = []
        legal = chain.anchor
        state = known[1] if known is not None and legal is not None else rules.creation()
        if legal is None and chain.erased:
            first, todo = todo[0], todo[1:]
            conditional = first.prev is not None and not first.erases and first.signer is not None
            adopted = rules.adopted(first) if conditional else None
            if adopted is not None:
                legal, state = first, adopted  # its history overflowed what the bucket keeps
            else:
                forged.append(Forged(first, "erases the key's history"))
                state = rules.erased(first)
        for link in todo:
            judged = rules.step(state, link)
            if isinstance(judged, str):
                forged.append(Forged(link, judged))
            else:
                legal, state = link, judged
        if chain.erased and known is not None:
            # A flood pushed what this reader last judged out of the history: it still knew that.
            state = rules.floor(state, known[1])
        return Tallied(chain.revisions[0] if chain.revisions else legal, state, legal, forged)


class Witness:
    """Says what a reader found forged: logs it and lays ``corrupt.forged_record`` (``data.bucket``
    names the bucket, ``ref`` the key), naming the signer by its live card."""

    def __init__(self, trail: Trail, directory: Directory) -> None:
        self._trail = trail
        self._directory = directory

    async def agent_of(self, key: str | None) -> str | None:
        """The live agent whose card announces the public key ``key`` (None: nobody, or unsigned)."""
        return None if key is None else await self._directory.announcing(key)

    async def forged(self, bucket: Bucket, key: str, found: Forged, restored: int | None) -> None:
        """Report ``found``, a forged revision of ``key`` in ``bucket`` (``restored``: the legal
        revision written back over it, if any)."""
        seq = found.link.seq
        await report_forgery(
            self._trail,
            "record.forged",
            {"bucket": bucket.name, "key": key},
            ref=key,
            agent=await self.agent_of(found.link.signer),
            data={
                "bucket": bucket.name,
                "revision": seq,
                "why": found.why,
                "key": found.link.signer,
                "restored": restored,
            },
            msg_id=f"{FORGED_RECORD}-{bucket.name}-{key}-{seq}",
        )


async def report_forgery(
    trail: Trail,
    event: str,
    where: dict[str, str],
    *,
    ref: str,
    agent: str | None,
    data: dict[str, JsonValue],
    msg_id: str,
) -> None:
    """Log a forgery found (as ``event``, with ``where`` it is) and lay its ``corrupt.forged_record``
    on the trail, once: ``msg_id`` names the forged revision, however many readers find it."""
    log.error(event, **where, revision=data["revision"], why=data["why"], agent=agent, signer=data["key"])
    await trail.emit(TrailEvent(kind=FORGED_RECORD, ref=ref, agent=agent, data=data), msg_id=msg_id)
