"""A KV bucket with exact compare-and-set semantics, including server-placed TTL markers.

nats-py's ``KeyValue.create`` does not recognise the marker the server leaves when a key's TTL
expires (``Nats-Marker-Reason``), so re-creating an expired lease would fail forever. This module
reads and writes the KV stream directly, following ADR-8, and treats markers as deletions.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TypeVar
from weakref import WeakKeyDictionary

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RawStreamMsg, StorageType, StreamConfig

from ._aio import gather_bounded
from ._connect import publishing_to, refusable, requesting_jetstream
from .errors import AntsError, PermissionDenied, ServerUnavailable
from .log import get_logger

log = get_logger("store")

T = TypeVar("T")

_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"
_WRONG_LAST_SEQUENCE = (10071, 10164)


_NO_RESPONDERS_RETRY_S = 10.0
"""How long a publish waits for a stream to get a leader (cluster start-up, failover)."""


_ACK_TIMEOUT_S = 5.0
"""How long a publish waits for the stream's ack (nats-py's JetStream default)."""


class _Acks:
    """Stream acks of one connection, on one wildcard subscription of its own.

    ``JetStreamContext.publish`` costs a random token, a ``wait_for`` and a ``PubAck`` per write;
    the writes of the task path (a CAS, an event) take a counter and a future instead, and their
    deadlines are kept in the order they were made (all wait as long), checked by one timer at the
    earliest deadline still waiting rather than by a timer each.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._sweeping: asyncio.TimerHandle | None = None
        self._sweeping_loop: asyncio.AbstractEventLoop | None = None
        self._count = 0
        self._sub: Subscription | None = None
        self._subscribing: asyncio.Lock | None = None

    async def _ensure(self) -> None:
        if self._sub is not None:
            return
        self._subscribing = self._subscribing or asyncio.Lock()
        async with self._subscribing:
            if self._sub is None:
                self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._answered)

    async def _answered(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    def _sweep(self) -> None:
        """Time out the requests whose deadline has passed (those answered are only forgotten),
        and come back at the earliest deadline of those still waiting."""
        self._sweeping = None
        loop, deadlines, waiting = self._sweeping_loop, self._deadlines, self._waiting
        if loop is None:
            return
        now = loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1] not in waiting):
            _, reply = deadlines.popleft()
            future = waiting.pop(reply, None)
            if future is not None and not future.done():
                future.set_exception(nats.errors.TimeoutError())
        if deadlines:
            self._sweeping = loop.call_at(deadlines[0][0], self._sweep)

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Msg:
        """The reply to ``payload`` published on ``subject`` (nats-py's errors: no responders,
        timeout)."""
        if self._sub is None:
            await self._ensure()
        self._count += 1
        reply = f"{self._prefix}{self._count}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[reply] = future
        deadline = loop.time() + _ACK_TIMEOUT_S
        self._deadlines.append((deadline, reply))
        if self._sweeping is None or self._sweeping_loop is not loop:
            self._sweeping_loop = loop
            self._sweeping = loop.call_at(deadline, self._sweep)
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
            msg = await future
        finally:
            waiting, deadlines = self._waiting, self._deadlines
            waiting.pop(reply, None)
            while deadlines and deadlines[0][1] not in waiting:
                deadlines.popleft()  # answered: only the oldest still waiting is kept at the front
        if msg.headers and msg.headers.get("Status") == "503":
            raise nats.errors.NoRespondersError
        return msg


_acks: WeakKeyDictionary[Client, _Acks] = WeakKeyDictionary()


async def _stored(nc: Client, subject: str, payload: bytes, headers: dict[str, str] | None) -> int:
    """Publish to a stream and return the sequence its ack names (``APIError`` on a refusal,
    ``NoStreamResponseError`` when no stream answers), as ``JetStreamContext.publish`` would."""
    acks = _acks.get(nc)
    if acks is None:
        acks = _acks[nc] = _Acks(nc)
    try:
        msg = await acks.request(subject, payload, headers)
    except nats.errors.NoRespondersError:
        raise nats.js.errors.NoStreamResponseError from None
    answer = json.loads(msg.data)
    if "error" in answer:
        nats.js.errors.APIError.from_error(answer["error"])  # raises the matching error
    return int(answer["seq"])


class _PublishingTo:
    """``publishing_to(subject)``, made only when a violation is reported (a write's matcher is
    built for every write of the task path, and nearly never asked)."""

    __slots__ = ("_subject",)

    def __init__(self, subject: str) -> None:
        self._subject = subject

    def __call__(self, text: str) -> bool:
        return publishing_to(self._subject)(text)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    headers: dict[str, str] | None = None,
    ttl: float | None = None,
) -> int:
    """Publish to a stream and return the stored sequence.

    ``ttl`` is sent exactly (nats-py would truncate it to whole seconds). "No responders" means
    the stream has no leader right now (a new or failing-over replica set): nothing was stored, so
    retrying is safe, and we do, briefly. Timeouts are not retried: the write may have landed.
    """
    headers = {**(headers or {}), **_ttl_header(ttl)}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + _NO_RESPONDERS_RETRY_S
    delay = 0.05
    while True:
        try:
            # nats-py gives no public handle on a context's connection; refusals are reported on it.
            return await refusable(
                js._nc,
                _PublishingTo(subject),
                _stored(js._nc, subject, payload, headers or None),
                action=f"write {subject}",
            )
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            if loop.time() + delay > give_up:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _ttl_header(ttl: float | None) -> dict[str, str]:
    """``ttl`` as a message's time to live, exactly (nats-py would truncate it to whole seconds)."""
    return {} if ttl is None else {"Nats-TTL": f"{round(ttl * 1000)}ms"}


async def publish_nowait(
    js: JetStreamContext, subject: str, payload: bytes, *, headers: dict[str, str] | None = None
) -> None:
    """Hand a message for a stream to the connection without asking for the stream's ack.

    One message instead of a request and its reply: for records that are worth having but whose
    loss costs nothing the board depends on (the stream stores it unless it cannot, e.g. while it
    has no leader). A refused publish is still logged by the connection's error handler.
    """
    async with translate_errors(f"write {subject}"):
        await js._nc.publish(subject, payload, headers=headers)


ATOMIC_BATCH_MAX = 1000
"""Most messages the server takes in one atomic batch (ADR-50)."""
ATOMIC_BATCH_MIN = 64
"""Fewest messages worth an atomic batch: a file stream commits one in about 6 ms (against 0.3 ms
for a single write), so small batches are written one by one, pipelined."""
_ATOMIC_DISABLED = 10174
_BATCH_TIMEOUT_S = 5.0
_no_atomic: WeakKeyDictionary[Client, set[str]] = WeakKeyDictionary()
"""Per connection, the streams that refused atomic batches (created without them): not asked again."""


async def publish_batches(
    js: JetStreamContext,
    stream: str,
    messages: Sequence[tuple[str, bytes, dict[str, str]]],
    *,
    least: int = ATOMIC_BATCH_MIN,
) -> list[int | None]:
    """Store ``messages`` (subject, payload, headers) in ``stream`` as atomic batches of up to
    ``ATOMIC_BATCH_MAX`` (ADR-50): each is stored whole or not at all, for two round trips instead
    of one per message. Returns each message's stream sequence, or None for every message of a
    batch the stream refused (a failed expectation such as a create of an existing key, or a
    stream without atomic batches) or not worth batching (fewer than ``least``): the caller
    writes those one by one (and learns why a refused one failed)."""
    nc = js._nc
    refusing = _no_atomic.setdefault(nc, set())
    found: list[int | None] = []
    for start in range(0, len(messages), ATOMIC_BATCH_MAX):
        chunk = messages[start : start + ATOMIC_BATCH_MAX]
        small = len(chunk) < max(least, 2)
        seqs = None if small or stream in refusing else await _publish_batch(nc, stream, chunk, refusing)
        found.extend(seqs if seqs is not None else [None] * len(chunk))
    return found


async def _publish_batch(
    nc: Client, stream: str, messages: Sequence[tuple[str, bytes, dict[str, str]]], refusing: set[str]
) -> list[int] | None:
    batch_id = nc.new_inbox().rsplit(".", 1)[-1]  # a fresh unique token
    last = len(messages)
    answer = None
    async with translate_errors(f"write a batch of {last} to {stream}"):
        for n, (subject, payload, own) in enumerate(messages, 1):
            headers = {**own, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
            if n == last:
                headers["Nats-Batch-Commit"] = "1"
            if n in (1, last):  # the start is confirmed (empty reply) and the commit acked
                reply = await refusable(
                    nc,
                    publishing_to(subject),
                    nc.request(subject, payload, headers=headers, timeout=_BATCH_TIMEOUT_S),
                    action=f"write {subject}",
                )
                answer = json.loads(reply.data) if reply.data else None
                if answer is not None and "error" in answer:
                    break
            else:
                await nc.publish(subject, payload, headers=headers)
    if answer is None or "error" in answer:
        error = (answer or {}).get("error", {})
        if error.get("err_code") == _ATOMIC_DISABLED:
            refusing.add(stream)
        log.debug("batch.refused", stream=stream, size=last, error=error.get("description"))
        return None
    final, count = int(answer["seq"]), int(answer["count"])
    return list(range(final - count + 1, final + 1))


Signing = Callable[[str, int, bytes], dict[str, str]]
"""Given a key's subject, the revision a value is written over, and the value: the headers that
sign it."""


class Conflict(Exception):
    """The key's last revision is not the expected one (a CAS lost). Internal to the library."""


@dataclass(frozen=True)
class Entry:
    """A live value of a key."""

    key: str
    value: bytes
    revision: int
    time: datetime | None


_NOT_ANSWERED = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


class _Translating:
    """``translate_errors``' context manager (a class: every write of the task path enters one,
    and a generator-based one costs several times as much)."""

    def __init__(self, action: str) -> None:
        self._action = action

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, nats.errors.ConnectionClosedError):
            # (Not the server's doing: this client closed, e.g. a board used after its async with.)
            raise ServerUnavailable(f"{self._action}: the connection to NATS is closed") from exc
        if isinstance(exc, _NOT_ANSWERED):
            raise ServerUnavailable(
                f"{self._action}: NATS server did not answer ({type(exc).__name__})"
            ) from exc


def translate_errors(action: str) -> _Translating:
    """Turn connection-level NATS failures into ``ServerUnavailable`` naming the action
    (``async with translate_errors(...)``)."""
    return _Translating(action)


_PATIENCE_S = 30.0
"""How long idempotent requests keep asking a cluster that cannot serve them yet."""

_UNANSWERED = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
_NO_PEERS = 10005
"""JetStream's "no suitable peers for placement": too few servers up for the replicas asked for."""


_RETRY_DELAY_MAX_S = 0.5
"""Longest pause between two tries: once the cluster has leaders again, a waiting request is
answered within about this (a try costs one request; bench/heal.py has the figures)."""
READ_TRY_S = 1.0
"""How long one try of a single-message read waits for its answer. A read sent while its stream
elects a leader goes unanswered: without a bound of its own it would wait out nats-py's 5 s
request timeout even when the new leader came a moment later (a read is safe to repeat)."""
_GUESS_TRY_S = 0.5
"""How long ``Bucket.guess`` waits for a direct get (the leader's read follows if none came)."""
_GUESS_REST_S = 30.0
"""How long ``Bucket.guess`` rests after direct gets were refused or went unanswered."""


async def patiently(
    js: JetStreamContext, action: str, op: Callable[[], Awaitable[T]], *, try_timeout: float | None = None
) -> T:
    """Run an idempotent request, retrying while the cluster cannot serve it.

    A freshly formed cluster, one electing a leader or one missing members can leave JetStream
    API requests unanswered (or refuse to place replicas) for seconds. Reads, and looking up or
    creating a stream, bucket or consumer with the same configuration, are idempotent, so asking
    again is safe. Writes are not retried here: a timed-out write may have landed. ``try_timeout``:
    how long one try waits (None: the request's own timeout), for requests that leave nothing
    behind when abandoned (a read; not a consumer's creation).
    """

    async def attempt() -> T:
        if try_timeout is None:
            return await op()
        try:
            async with asyncio.timeout(try_timeout):
                return await op()
        except TimeoutError as exc:
            if isinstance(exc, nats.errors.TimeoutError):
                raise
            raise nats.errors.TimeoutError from exc

    loop = asyncio.get_running_loop()
    give_up = loop.time() + _PATIENCE_S
    delay = 0.1
    tries = 0
    while True:
        try:
            async with translate_errors(action):
                return await refusable(js._nc, requesting_jetstream, attempt(), action=action)
        except ServerUnavailable as exc:
            if not isinstance(exc.__cause__, _UNANSWERED) or loop.time() + delay > give_up:
                raise
            if not js._nc._server_info.get("jetstream"):
                # Not a cluster still electing: this server has no JetStream at all.
                raise ServerUnavailable(f"{action}: JetStream is not enabled on this NATS server") from exc
            reason = type(exc.__cause__).__name__
        except nats.js.errors.APIError as exc:
            if exc.err_code != _NO_PEERS:
                raise refused(action, exc) from exc
            if loop.time() + delay > give_up:
                raise ServerUnavailable(f"{action}: {exc.description}") from exc
            reason = str(exc.description)
        tries += 1
        # Said once per request; the tries after it (every half second) are detail.
        (log.warning if tries == 1 else log.debug)("store.retry", action=action, reason=reason, tries=tries)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_DELAY_MAX_S)


def refused(action: str, exc: nats.js.errors.APIError) -> AntsError:
    """The error to raise for a JetStream request that the server answered with a refusal."""
    return AntsError(f"{action}: the server refused: {exc.description} (code {exc.err_code})")


async def last_message(
    js: JetStreamContext, stream: str, subject: str, *, action: str, first: bool = False
) -> RawStreamMsg | None:
    """The last message ``stream`` holds on ``subject`` (a filter: wildcards allowed), or with
    ``first`` the first one; None if it holds none (read from the stream leader)."""

    async def read() -> RawStreamMsg | None:
        try:
            if first:
                return await js.get_msg(stream, subject=subject, seq=1, next=True)
            return await js.get_msg(stream, subject=subject)
        except nats.js.errors.NotFoundError:
            return None

    return await patiently(js, action, read, try_timeout=READ_TRY_S)


def is_tombstone(headers: dict[str, str] | None) -> bool:
    if not headers:
        return False
    return headers.get(_KV_OPERATION) in ("DEL", "PURGE") or _MARKER_REASON in headers


class Bucket:
    """CAS access to one KV bucket (stream ``KV_<name>``, subjects ``$KV.<name>.<key>``)."""

    def __init__(self, js: JetStreamContext, name: str) -> None:
        self.name = name
        self.stream = f"KV_{name}"
        self._js = js
        self._prefix = f"$KV.{name}."
        # Writes to a bucket in another JetStream domain (a leaf node's hub) go through its API
        # prefix; the stream stores them under ``$KV.<name>.<key>`` all the same (nats.py #1010).
        api = js._prefix
        self._write_prefix = self._prefix if api == "$JS.API" else f"{api}.{self._prefix}"
        self.direct = False
        """Whether the bucket's stream takes direct gets (``guess``)."""
        self._guess_rests_until = 0.0

    async def _last(self, key: str) -> tuple[Entry | None, int, datetime | None]:
        """The live entry (None if absent or deleted), the key's last revision (0 if none), and
        when it was deleted, by the server's clock (None unless its last message is a tombstone
        or an expiry marker)."""
        msg = await last_message(self._js, self.stream, self._prefix + key, action=f"read {self.name}/{key}")
        if msg is None:
            return None, 0, None
        revision = int(msg.seq or 0)
        if is_tombstone(msg.headers):
            return None, revision, msg.time
        return Entry(key=key, value=msg.data or b"", revision=revision, time=msg.time), revision, None

    async def guess(self, key: str) -> Entry | None:
        """The live entry for ``key`` as any replica has it (a direct get: the raw value, no
        base64), perhaps not the last: for a compare-and-set that will find out. None when there
        is none there, the bucket takes no direct gets (``direct``), or no answer came soon (an
        optimisation: it never waits long, and after a refusal or no responders it rests a while)."""
        loop = asyncio.get_running_loop()
        if not self.direct or loop.time() < self._guess_rests_until:
            return None
        read = self._js.get_msg(self.stream, subject=self._prefix + key, direct=True)
        try:
            async with asyncio.timeout(_GUESS_TRY_S):
                msg = await refusable(self._js._nc, requesting_jetstream, read, action=f"guess {key}")
        except (PermissionDenied, nats.errors.NoRespondersError):
            # (A bucket made before direct gets that this client may not open up, a user who may
            # not ask, or a replica set without a leader for a moment.)
            self._guess_rests_until = loop.time() + _GUESS_REST_S
            return None
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
            return None
        if is_tombstone(msg.headers):
            return None
        return Entry(key=key, value=msg.data or b"", revision=int(msg.seq or 0), time=msg.time)

    async def get(self, key: str) -> Entry | None:
        """The live entry for ``key``, or None when absent, deleted or expired."""
        entry, _, _ = await self._last(key)
        return entry

    async def read(self, key: str) -> tuple[Entry | None, datetime | None]:
        """The live entry for ``key``, or, when there is none, when it was deleted (None if it
        never had a value, or the bucket no longer keeps its tombstone)."""
        entry, _, deleted = await self._last(key)
        return entry, deleted

    def subject(self, key: str) -> str:
        """The subject ``key``'s revisions are written on (what a message signature covers)."""
        return self._prefix + key

    async def last(self, key: str) -> RawStreamMsg | None:
        """The last message on ``key`` as stored (tombstones and markers included), or None."""
        return await last_message(self._js, self.stream, self._prefix + key, action=f"read {self.name}/{key}")

    async def at(self, revision: int) -> RawStreamMsg | None:
        """The message stored at ``revision`` (of any key), or None when the bucket no longer keeps it."""

        async def read() -> RawStreamMsg | None:
            try:
                return await self._js.get_msg(self.stream, seq=revision)
            except nats.js.errors.NotFoundError:
                return None

        return await patiently(self._js, f"read {self.name}@{revision}", read, try_timeout=READ_TRY_S)

    async def _publish(
        self,
        key: str,
        value: bytes,
        *,
        last: int,
        ttl: float | None,
        op: str | None,
        rollup: bool = False,
        headers: dict[str, str] | None = None,
    ) -> int:
        headers = {**(headers or {}), _EXPECTED_LAST_SUBJECT_SEQ: str(last)}
        if op:
            headers[_KV_OPERATION] = op
        if rollup:
            headers["Nats-Rollup"] = "sub"
        async with translate_errors(f"write {self.name}/{key}"):
            try:
                return await publish(self._js, self._write_prefix + key, value, headers=headers, ttl=ttl)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    raise Conflict(f"{self.name}/{key}: {exc.description}") from exc
                raise

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
        sign: Signing | None = None,
    ) -> int:
        """Write ``key`` only if it has no live value; returns the new revision or raises ``Conflict``.
        ``sign`` adds a signature for the revision the write is made over (after a deletion, not 0)."""

        def signed(last: int) -> dict[str, str] | None:
            return {**(headers or {}), **sign(self._prefix + key, last, value)} if sign else headers

        try:
            return await self._publish(key, value, last=0, ttl=ttl, op=None, headers=signed(0))
        except Conflict:
            entry, last, _ = await self._last(key)
            if entry is not None:
                raise
            # Deleted or expired: CAS on the tombstone's revision, so racing creators still get one winner.
            return await self._publish(key, value, last=last, ttl=ttl, op=None, headers=signed(last))

    async def create_many(
        self,
        items: Sequence[tuple[str, bytes]],
        *,
        sign: Signing | None = None,
        ttl: float | None = None,
        least: int = ATOMIC_BATCH_MIN,
    ) -> list[int | None]:
        """Create many keys; each one's revision, or None where the key is taken. Written as
        atomic batches (of at least ``least`` keys) where the stream allows them; a batch refused
        because some key is taken (or the stream takes no batches) is written one create at a
        time, pipelined. ``sign`` gives each value's signature headers (see ``Signing``); ``ttl``
        each key's time to live."""
        expect = {_EXPECTED_LAST_SUBJECT_SEQ: "0", **_ttl_header(ttl)}
        revisions = await publish_batches(
            self._js,
            self.stream,
            [
                (
                    self._write_prefix + key,
                    value,
                    {**(sign(self._prefix + key, 0, value) if sign else {}), **expect},
                )
                for key, value in items
            ],
            least=least,
        )
        redo = [i for i, revision in enumerate(revisions) if revision is None]
        one_by_one = await gather_bounded(self._create_or_none(*items[i], sign, ttl) for i in redo)
        for i, revision in zip(redo, one_by_one, strict=True):
            revisions[i] = revision
        return revisions

    async def _create_or_none(
        self, key: str, value: bytes, sign: Signing | None, ttl: float | None
    ) -> int | None:
        try:
            return await self.create(key, value, sign=sign, ttl=ttl)
        except Conflict:
            return None

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> int:
        """Write ``key`` unconditionally (last writer wins); returns the new revision."""
        async with translate_errors(f"write {self.name}/{key}"):
            return await publish(self._js, self._write_prefix + key, value, ttl=ttl)

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        last: int,
        ttl: float | None = None,
        rollup: bool = False,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Write ``key`` only if its last revision is ``last``; returns the new revision. With
        ``rollup`` the new value replaces the key's history (and, with ``ttl``, then expires,
        leaving the key absent). ``headers`` go with it (a signature, say)."""
        return await self._publish(key, value, last=last, ttl=ttl, op=None, rollup=rollup, headers=headers)

    async def history(self, key: str) -> list[Entry]:
        """Every revision the bucket still keeps of ``key``, oldest first (tombstones left out),
        with the server's write times."""
        async with translate_errors(f"read history of {self.name}/{key}"):
            kv = await self._js.key_value(self.name)
            try:
                entries = await kv.history(key)
            except nats.js.errors.NoKeysError:
                return []
        return [
            # (nats-py types ``created`` as int; it holds the message's datetime.)
            Entry(
                key=key,
                value=e.value or b"",
                revision=e.revision or 0,
                time=e.created if isinstance(e.created, datetime) else None,
            )
            for e in entries
            if not e.operation
        ]

    async def delete(
        self, key: str, *, last: int, ttl: float | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Delete ``key`` if its last revision is still ``last`` (raises ``Conflict`` otherwise);
        with ``ttl`` the tombstone itself goes after that many seconds."""
        await self._publish(key, b"", last=last, ttl=ttl, op="DEL", headers=headers)


async def stream_config(js: JetStreamContext, name: str) -> StreamConfig | None:
    """The configuration of stream ``name``, or None when it does not exist (nothing is created)."""

    async def read() -> StreamConfig | None:
        try:
            return (await js.stream_info(name)).config
        except nats.js.errors.NotFoundError:
            return None

    return await patiently(js, f"open stream {name}", read)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create stream ``config.name`` unless it exists (an existing one is used as configured, but
    for being opened up to atomic batches and direct gets when ``config`` asks for them)."""

    async def op() -> StreamConfig | None:
        try:
            return (await js.stream_info(str(config.name))).config
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            return None

    existing = await patiently(js, f"open stream {config.name}", op)
    if existing is not None:
        await _open_up(js, existing, atomic=bool(config.allow_atomic), direct=bool(config.allow_direct))


async def _open_up(
    js: JetStreamContext, config: StreamConfig, *, atomic: bool, direct: bool, history: int = 0
) -> StreamConfig:
    """Let a stream that predates them take atomic batches (without, batches fall back to single
    writes, which only costs speed) or direct gets (which ``nats stream view`` uses), and keep at
    least ``history`` messages per subject (a bucket's revisions per key). Returns the stream's
    configuration as it now is (``config`` itself when nothing was, or could be, changed)."""
    kept = config.max_msgs_per_subject or 0
    short = history > 0 and 0 < kept < history
    missing = (atomic and not config.allow_atomic) or (direct and not config.allow_direct) or short
    if not missing:
        return config
    opened = dataclasses.replace(
        config,
        allow_atomic=config.allow_atomic or atomic,
        allow_direct=config.allow_direct or direct,
        max_msgs_per_subject=history if short else config.max_msgs_per_subject,
    )
    action = f"open up stream {config.name}"
    try:
        async with translate_errors(action):
            await refusable(js._nc, requesting_jetstream, js.update_stream(opened), action=action)
    except (nats.js.errors.APIError, AntsError) as exc:  # e.g. an agent may not reconfigure
        log.warning("stream.upgrade_unavailable", stream=config.name, error=str(exc))
        return config
    return opened


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create durable consumer ``config.durable_name`` on ``stream`` unless it exists."""

    async def op() -> None:
        try:
            await js.consumer_info(stream, str(config.durable_name))
        except nats.js.errors.NotFoundError:
            await js.add_consumer(stream, config)

    await patiently(js, f"open consumer {config.durable_name}", op)


_KV_DUPLICATE_WINDOW_S = 120.0
"""What nats-py gives a bucket (ADR-8: two minutes)."""


async def ensure_kv(
    js: JetStreamContext,
    bucket: str,
    *,
    replicas: int,
    history: int,
    max_value_size: int = -1,
    marker_ttl: float | None = None,
    atomic: bool = False,
    direct: bool = False,
    metadata: dict[str, str] | None = None,
    erasable: bool = True,
) -> StreamConfig:
    """Create KV ``bucket`` unless it exists (an existing bucket is used as it is configured);
    ``atomic`` lets it take atomic batches (see ``Bucket.create_many``), ``direct`` direct gets
    (see ``Bucket.guess``); ``metadata`` is set on a bucket this call creates. A bucket that is
    not ``erasable`` refuses rollups (purges) and per-message TTLs but ``marker_ttl``'s: its keys'
    history ends only by overflowing what it keeps. Returns the stream's configuration."""

    async def op() -> StreamConfig:
        try:
            return (await js.stream_info(f"KV_{bucket}")).config
        except nats.js.errors.NotFoundError:
            pass
        # The stream nats-py's create_key_value makes (ADR-8), with atomic batches allowed from
        # the start: raising them later needs a stream update, which agents may not make.
        await js.add_stream(
            StreamConfig(
                name=f"KV_{bucket}",
                subjects=[f"$KV.{bucket}.>"],
                # Reads go to the stream leader (a reader sees its own writes), guesses may not.
                allow_direct=direct,
                allow_rollup_hdrs=erasable,
                allow_msg_ttl=erasable or bool(marker_ttl),
                allow_atomic=atomic or None,
                deny_delete=True,
                discard=DiscardPolicy.NEW,
                duplicate_window=_KV_DUPLICATE_WINDOW_S,
                max_consumers=-1,
                max_msg_size=max_value_size,
                max_msgs=-1,
                max_msgs_per_subject=history,
                num_replicas=replicas,
                storage=StorageType.FILE,
                subject_delete_marker_ttl=marker_ttl if marker_ttl else None,
                metadata=metadata,
            )
        )
        return (await js.stream_info(f"KV_{bucket}")).config

    config = await patiently(js, f"open bucket {bucket}", op)
    return await _open_up(js, config, atomic=atomic, direct=direct, history=history)
