"""The pheromone trail: every state change leaves a typed event on the ``ANTS_TRAIL`` stream.

Services react to the trail instead of being told what to do. Events are at-least-once: a follower
acks an event only after its loop body handled it, so a crash means redelivery. Marks are events
that agents lay on purpose; their intensity evaporates (halves every ``half_life``) and is reinforced
by further deposits of the same mark, and the stream's ``max_age`` drops old events altogether.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import nats.errors
import nats.js.errors
import pydantic
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import JsonValue

from ._connect import jetstream, on_reconnect
from ._pull import Puller, fetch_patiently, filtering, read_back, replay
from ._store import ensure_stream, last_message, patiently, publish, publish_nowait, translate_errors
from ._watch import pushed, start_policy
from .errors import InvalidTask, ServerUnavailable
from .identity import Identity
from .log import get_logger
from .models import PROTOCOL_VERSION, TrailEvent, parse_or_none, utcnow, wire_bytes
from .names import (
    ID_RULE,
    MARK_NAME_PATTERN,
    TRAIL_STREAM,
    TRAIL_SUBJECT_PREFIX,
    is_valid_id,
    trail_filter,
    trail_subject,
    trail_topic,
)

log = get_logger("trail")

_MARK_RE = re.compile(MARK_NAME_PATTERN)
_FETCH_TIMEOUT_S = 1.0
_FOLLOW_BATCH = 256
"""Events a follow of its own (no durable) asks for at once."""
_IDLE_CHECK_S = 5.0
"""How often an idle follow of its own asks whether the server sent it events it never got."""
_NEWEST_MIN_WINDOW = 256
"""Messages of the trail first read back from its end for ``newest``."""


@dataclass(frozen=True)
class TrailConfig:
    """Retention and evaporation of the trail."""

    max_age: float = 7 * 24 * 3600.0
    """Seconds an event stays on the stream (then the server drops it)."""
    half_life: float = 600.0
    """Seconds in which a mark's intensity halves."""
    max_bytes: int = 1024**3
    """Bytes the trail may hold; beyond them the oldest events go first (as they do after max_age)."""
    replicas: int = 1


@dataclass(frozen=True)
class Scent:
    """The current strength of one mark (name + key), summed over every deposit."""

    subject: str
    """The mark's topic, ``ants.trail.mark.<name>.<key>`` (its deposits add an author token)."""
    name: str
    key: str
    strength: float
    deposits: int
    last: TrailEvent


def _read(subject: str, data: bytes, seq: int, headers: dict[str, str] | None) -> TrailEvent | None:
    """The event stored as ``seq`` on ``subject``, or None when it is not one, not about an id (a
    ref is a task id, agent id or mark key: readers use it as a key and a file name), or not on the
    subject of its author (an event in another agent's name, which access control refuses). The
    event keeps its message (``TrailEvent.stored``): a signature covers those bytes, not our JSON."""
    event = parse_or_none(TrailEvent, data, where=subject)
    if event is None:
        return None
    if not is_valid_id(event.ref) or (event.by is not None and not is_valid_id(event.by)):
        log.warning("trail.invalid_ref", subject=subject, kind=event.kind)
        return None
    if subject != trail_subject(event.kind, event.ref, event.by):
        log.warning("trail.misplaced_event", subject=subject, kind=event.kind, by=event.by)
        return None
    return event.model_copy(update={"seq": seq}).stored_as(subject, data, headers)


class _Batch:
    """The events a follow of its own has not handed out yet, and when they are due."""

    def __init__(self, linger: float) -> None:
        self.events: list[TrailEvent] = []
        self.due: float | None = None
        self.seen: int | None = None
        """The stream sequence of the last message taken in (an event or not)."""
        self._linger = linger

    def add(self, seq: int, event: TrailEvent | None, now: float) -> None:
        self.seen = seq
        if event is not None:
            self.events.append(event)
        if self.due is None:
            self.due = now + self._linger

    def wait(self, now: float) -> float:
        """How long the next fetch may wait."""
        return _FETCH_TIMEOUT_S if self.due is None else max(self.due - now, 0.001)

    def ripe(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def take(self) -> list[TrailEvent]:
        events, self.events, self.due = self.events, [], None
        return events


class _Every:
    """Says ``due`` at most once every ``seconds`` (a loop's occasional work)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


def _parse(msg: Msg) -> TrailEvent | None:
    return _read(msg.subject, msg.data, msg.metadata.sequence.stream, msg.headers)


class Trail:
    """Read and write the trail. ``Trail.open(nc)`` creates the stream if it is missing."""

    def __init__(self, nc: Client, config: TrailConfig | None = None) -> None:
        self.config = config or TrailConfig()
        self._nc = nc
        self._js = jetstream(nc)

    @classmethod
    async def open(cls, nc: Client, config: TrailConfig | None = None) -> Trail:
        """Bind to the trail on ``nc``, creating the stream unless it exists."""
        trail = cls(nc, config)
        await trail.ensure()
        return trail

    async def ensure(self) -> None:
        """Create the ``ANTS_TRAIL`` stream unless it exists."""
        await ensure_stream(
            self._js,
            StreamConfig(
                name=TRAIL_STREAM,
                subjects=[f"{TRAIL_SUBJECT_PREFIX}.>"],
                storage=StorageType.FILE,
                max_age=self.config.max_age,
                max_bytes=self.config.max_bytes,
                discard=DiscardPolicy.OLD,
                num_replicas=self.config.replicas,
            ),
        )

    async def emit(
        self, event: TrailEvent, *, msg_id: str | None = None, signer: Identity | None = None
    ) -> int:
        """Append ``event`` and wait for the stream to store it; returns its stream sequence.
        ``msg_id`` makes a retried append idempotent; with ``signer`` the message is signed (headers
        ``Ants-Signer`` and ``Ants-Sig`` over its subject and payload: ``identity.signing_input``)."""
        subject, payload, headers = self._encode(event, msg_id, signer)
        async with translate_errors(f"append {event.kind} to the trail"):
            return await publish(self._js, subject, payload, headers=headers)

    async def emit_nowait(
        self, event: TrailEvent, *, msg_id: str | None = None, signer: Identity | None = None
    ) -> None:
        """Append ``event`` without waiting for the stream's ack: one message instead of two.

        For events whose loss would cost nothing the board depends on (a claim, a heartbeat,
        progress): the stream stores them unless it cannot (e.g. while it elects a leader)."""
        subject, payload, headers = self._encode(event, msg_id, signer)
        await publish_nowait(self._js, subject, payload, headers=headers)

    @staticmethod
    def _encode(
        event: TrailEvent, msg_id: str | None, signer: Identity | None
    ) -> tuple[str, bytes, dict[str, str] | None]:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else {}
        if event.v is None:
            event = event.model_copy(update={"v": PROTOCOL_VERSION})
        if signer is not None and (event.signer is not None or event.sig is not None):
            # The signature goes in headers; the body's deprecated sig/signer would only disagree.
            event = event.model_copy(update={"signer": None, "sig": None})
        subject, payload = trail_subject(event.kind, event.ref, event.by), wire_bytes(event, exclude={"seq"})
        if signer is not None:
            headers.update(signer.sign_message(subject, payload))
        return subject, payload, headers or None

    async def mark(
        self, name: str, *, key: str, data: JsonValue = None, intensity: float = 1.0, agent: str | None = None
    ) -> TrailEvent:
        """Lay (or reinforce) the mark ``name`` on ``key``: another deposit adds to its strength."""
        if not _MARK_RE.match(name):
            raise InvalidTask(f"invalid mark name {name!r}: 1-5 dotted tokens of a-z 0-9 _ -")
        if not is_valid_id(key):
            raise InvalidTask(f"invalid mark key {key!r}: use {ID_RULE}")
        try:
            event = TrailEvent(kind=f"mark.{name}", ref=key, data=data, intensity=intensity, agent=agent)
        except pydantic.ValidationError as exc:
            raise InvalidTask(f"invalid mark: {exc.errors()[0]['msg']}") from exc
        seq = await self.emit(event)
        return event.model_copy(update={"seq": seq})

    async def replay(
        self, subjects: str = f"{TRAIL_SUBJECT_PREFIX}.>", *, since: datetime | None = None
    ) -> list[TrailEvent]:
        """Every event still on the stream under ``subjects`` (optionally from ``since``), in order."""
        # An unnamed consumer: read-only credentials may create those (access control).
        messages = await replay(self._js, TRAIL_STREAM, subjects, since=since, action=f"replay {subjects}")
        return [event for event in map(_parse, messages) if event is not None]

    async def newest(self, count: int, subjects: str = f"{TRAIL_SUBJECT_PREFIX}.>") -> list[TrailEvent]:
        """The last ``count`` events under ``subjects``, in order: read from the stream's end back,
        widening until enough match, so it costs what it returns on a long trail, not the trail."""
        js = self._js

        async def bounds() -> tuple[int, int]:
            state = (await js.stream_info(TRAIL_STREAM)).state
            return state.first_seq, state.last_seq

        first, last = await patiently(js, f"read stream {TRAIL_STREAM}", bounds)
        window = max(count * 4, _NEWEST_MIN_WINDOW)
        found: list[TrailEvent] = []
        readings = read_back(
            js, TRAIL_STREAM, subjects, first=first, last=last, window=window, action=f"read {subjects}"
        )
        async with contextlib.aclosing(readings) as windows:
            async for messages, _ in windows:
                found = [event for event in map(_parse, messages) if event is not None]
                if len(found) >= count:
                    break
        return found[-count:]

    async def _record_corrupt(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        await self.emit(
            TrailEvent(kind="corrupt.event", ref=str(seq), data={"subject": msg.subject}),
            msg_id=f"corrupt-event-{seq}",  # several followers may meet the same bad event
        )

    async def last(self, kind: str, ref: str, *, first: bool = False) -> TrailEvent | None:
        """The latest event of ``kind`` about ``ref`` still on the trail (with ``first``, the
        earliest); None if none is left."""
        subject = trail_filter(kind, ref)
        msg = await last_message(self._js, TRAIL_STREAM, subject, action=f"read {subject}", first=first)
        if msg is None:
            return None
        return _read(str(msg.subject), msg.data or b"", int(msg.seq or 0), msg.headers)

    async def history(self, task_id: str) -> list[TrailEvent]:
        """The whole recorded life of a task, in order."""
        return await self.replay(trail_filter("task.*", task_id))

    async def strongest(
        self,
        subjects: str = f"{TRAIL_SUBJECT_PREFIX}.mark.>",
        *,
        limit: int = 10,
        now: datetime | None = None,
    ) -> list[Scent]:
        """The marks under ``subjects`` with the most strength left right now, strongest first."""
        now = now or utcnow()
        groups: dict[str, list[TrailEvent]] = defaultdict(list)
        for event in await self.replay(subjects):
            if event.kind.startswith("mark."):
                groups[trail_topic(event.kind, event.ref)].append(event)
        scents = [
            Scent(
                subject=subject,
                name=deposits[-1].kind.removeprefix("mark."),
                key=deposits[-1].ref,
                strength=sum(e.strength(now, self.config.half_life) for e in deposits),
                deposits=len(deposits),
                last=deposits[-1],
            )
            for subject, deposits in groups.items()
        ]
        scents.sort(key=lambda s: s.strength, reverse=True)
        return scents[:limit]

    async def follow(
        self,
        subjects: str | Sequence[str],
        *,
        durable: str | None = None,
        since: datetime | None = None,
        new_only: bool = False,
        ack_wait: float = 30.0,
        in_order: bool = False,
    ) -> AsyncGenerator[TrailEvent, None]:
        """Events under ``subjects``, as they come, for a reacting service.

        Each event is acked when the loop asks for the next one, i.e. after the body handled it: if
        the body raises or the process dies, the event is redelivered after ``ack_wait``. Replicas of
        a service passing the same ``durable`` share one consumer, so each event goes to one of them
        (the durable remembers its position across restarts). Without ``durable``, delivery starts at
        the beginning, at ``since``, or with new events only (``new_only``), to this reader alone,
        in order and each once: nothing is acknowledged (one message an event), and a gap in the
        consumer's sequence, a reconnection or a consumer the server removed starts a new consumer
        at the event after the last one handed out. ``in_order`` allows one unacked event at a time
        across all replicas of a durable, for projections that must apply events in order.
        """
        if durable is not None and not is_valid_id(durable):
            raise InvalidTask(f"invalid durable name {durable!r}")
        policy = start_policy(since, new_only)
        filters = [subjects] if isinstance(subjects, str) else list(subjects)
        if durable is None:
            async with aclosing(self._follow_alone(filters, policy, since)) as batches:
                async for batch in batches:
                    for own in batch:
                        yield own
            return
        config = ConsumerConfig(
            durable_name=durable,
            **filtering(filters),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=policy,
            opt_start_time=since,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=1 if in_order else None,
        )
        async with translate_errors(f"follow {subjects}"):
            name = await self._consumer(config)
        async with Puller(self._nc, TRAIL_STREAM, name) as puller:
            handled: Msg | None = None
            while True:
                # The event handled last is acknowledged by the request for the next one (if that
                # fails, the server redelivers it: at least once).
                msg = await fetch_patiently(puller, _FETCH_TIMEOUT_S, acking=handled)
                handled = None
                if msg is None:
                    continue
                event = _parse(msg)
                if event is None:
                    await msg.term()  # never valid: redelivering it would only loop
                    await self._record_corrupt(msg)
                    continue
                yield event
                handled = msg

    async def follow_batches(
        self,
        subjects: str | Sequence[str],
        *,
        after: int | None = None,
        since: datetime | None = None,
        new_only: bool = False,
        linger: float = 0.0,
    ) -> AsyncGenerator[list[TrailEvent], None]:
        """Events under ``subjects`` to this reader alone, in order and each once, in batches of
        what has arrived (waiting up to ``linger`` seconds after a batch's first event for more):
        for a reader that handles several events at once (the ledger writes each agent's entry
        once per batch), and an empty batch when none came for a second. Delivery starts after
        stream sequence ``after``, else as ``follow`` without a durable does; nothing is
        acknowledged (one message an event)."""
        filters = [subjects] if isinstance(subjects, str) else list(subjects)
        start = start_policy(since, new_only)
        async with aclosing(self._follow_alone(filters, start, since, after, linger)) as batches:
            async for batch in batches:
                yield batch

    async def _follow_alone(
        self,
        filters: list[str],
        policy: DeliverPolicy,
        since: datetime | None,
        after: int | None = None,
        linger: float = 0.0,
    ) -> AsyncGenerator[list[TrailEvent], None]:
        """``follow`` without a durable, in batches of what has arrived (or of what arrived within
        ``linger`` seconds of a batch's first event): nothing acknowledged, and the consumer's
        sequence checked. An event the server sent while the connection broke is
        one this reader never got, so the next one's consumer sequence skips it, or (nothing more
        coming) the reconnection says so: either way a new consumer starts after the last event
        handed out (``after``: its stream sequence)."""
        reconnected = False

        def note_reconnect() -> None:
            nonlocal reconnected
            reconnected = True

        stop = on_reconnect(self._nc, note_reconnect)
        try:
            while True:
                reconnected = False
                info = await self._own_consumer(filters, policy, since, after)
                # Where it starts: a reconnection before its first event must not start it anew
                # at "new events only" and skip what came meanwhile.
                after = int(info.delivered.stream_seq or 0) if info.delivered else after
                expected = 1
                loop = asyncio.get_running_loop()
                idle_check = _Every(_IDLE_CHECK_S)
                batch = _Batch(linger)
                async with Puller(self._nc, TRAIL_STREAM, str(info.name), batch=_FOLLOW_BATCH) as puller:
                    while not reconnected:
                        msg = await self._fetch_own(puller, batch.wait(loop.time()))
                        if msg is False:
                            break  # removed while this client was away: start a new one
                        if msg is None and batch.due is not None:
                            after = batch.seen
                            yield batch.take()  # (lingered for more: none came)
                            continue
                        if msg is None:
                            yield []  # idle: the reader may catch up with its own work
                            # Events lost on a path that broke while this connection held (a
                            # route, a leaf link) show only in what the server says it sent.
                            if idle_check.due() and await self._sent_beyond(puller.consumer, expected - 1):
                                log.info("trail.follow_gap", expected=expected, after=after)
                                break
                            continue
                        sequence = msg.metadata.sequence
                        if sequence.consumer != expected:
                            log.info(
                                "trail.follow_gap", expected=expected, got=sequence.consumer, after=after
                            )
                            break
                        expected += 1
                        event = _parse(msg)
                        if event is None:
                            await self._record_corrupt(msg)
                        batch.add(sequence.stream, event, loop.time())
                        if not puller.buffered and batch.ripe(loop.time()):
                            after = batch.seen
                            yield batch.take()
                    if batch.events:  # what arrived before the gap, in order
                        after = batch.seen
                        yield batch.take()
        finally:
            stop()

    @staticmethod
    async def _fetch_own(puller: Puller, timeout: float) -> Msg | Literal[False] | None:
        """The next event of a follow of its own; None when none came within ``timeout`` seconds
        or nobody answers yet (an election); False when the server removed the consumer."""
        try:
            return await fetch_patiently(puller, timeout)
        except ServerUnavailable:
            exists = await puller.exists()
            if exists is None:
                return None
            if exists is False:
                return False
            raise

    async def _own_consumer(
        self, filters: list[str], policy: DeliverPolicy, since: datetime | None, after: int | None
    ) -> ConsumerInfo:
        """A new consumer acknowledging nothing, from the event after stream sequence ``after``
        (else as ``policy`` and ``since`` say)."""
        config = ConsumerConfig(
            **filtering(filters),
            ack_policy=AckPolicy.NONE,
            deliver_policy=policy if after is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_time=since if after is None else None,
            opt_start_seq=None if after is None else after + 1,
            inactive_threshold=60.0,
        )
        # (Patient: after a failover the stream may be electing a leader for seconds.)
        create = functools.partial(self._js.add_consumer, TRAIL_STREAM, config=config)
        return await patiently(self._js, f"follow {filters}", create)

    async def _sent_beyond(self, consumer: str, received: int) -> bool:
        """Whether the server says it sent consumer ``consumer`` more than ``received`` events
        (False when it does not answer)."""
        try:
            info = await self._js.consumer_info(TRAIL_STREAM, consumer, timeout=_FETCH_TIMEOUT_S)
        except (nats.errors.Error, nats.js.errors.Error):
            return False
        return info.delivered is not None and int(info.delivered.consumer_seq or 0) > received

    async def listen(self, kind: str, on_event: Callable[[TrailEvent], None]) -> Subscription:
        """Hear the events of ``kind`` (e.g. ``task.cancelled``) as they are laid: ``on_event``
        gets each, with no consumer and nothing acked (a plain subscription), for news worth having
        at once and worth nothing once missed (a service that must see every event ``follow``s).
        Every event laid after this returns is heard; ``unsubscribe`` the result to stop."""

        async def deliver(msg: Msg) -> None:
            event = parse_or_none(TrailEvent, msg.data, where=msg.subject)
            if event is not None:
                on_event(event)

        async with translate_errors(f"listen for {kind}"):
            sub = await self._nc.subscribe(trail_filter(kind), cb=deliver)
            await self._nc.flush()  # the server knows of the subscription from here on
        return sub

    async def watch(
        self, subjects: str = f"{TRAIL_SUBJECT_PREFIX}.>", *, since: datetime | None = None
    ) -> AsyncGenerator[TrailEvent, None]:
        """Events under ``subjects`` (from ``since``, else new ones only), as they come, for a view.

        Unlike ``follow`` nothing is acknowledged (an ordered push consumer, resumed by the client
        after a gap), so read-only credentials may watch: an observer may not ack. Corrupt events
        are skipped (``follow`` records them)."""
        feed = pushed(
            self._js, TRAIL_STREAM, [subjects], action=f"watch {subjects}", since=since, new_only=not since
        )
        async with feed as (_, arrived):
            while True:
                event = _parse(await arrived.get())
                if event is not None:
                    yield event

    async def _consumer(self, config: ConsumerConfig) -> str:
        """The name of the consumer ``config`` describes: an existing durable as it is (changing
        its settings is an operator's decision), else a new consumer."""
        if config.durable_name is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                return str((await self._js.consumer_info(TRAIL_STREAM, config.durable_name)).name)
        info = await self._js.add_consumer(TRAIL_STREAM, config=config)
        return str(info.name)
