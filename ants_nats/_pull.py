"""A lean pull consumer, straight from JetStream's ``CONSUMER.MSG.NEXT`` API: the one way ants-nats
pulls (an agent's tickets, one per request; a trail follower's events; a replay's, in batches).

An agent fetches once per task. nats-py's ``PullSubscription.fetch`` creates two tasks and a uuid
per call and waits with ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation
(CPython gh-86296). ``Puller`` keeps one subscription on a private inbox instead, sends one
``NEXT`` request per fetch (expiring on the server just before the local wait ends) and waits with
``asyncio.timeout``; it re-raises a cancellation that a ``wait_for`` elsewhere swallowed. Each
request has its own reply subject, so the end of an abandoned request is never taken for the end
of the current one; a ticket that arrives late is kept for the next fetch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from ._aio import honour_swallowed_cancel
from ._connect import api_prefix, jetstream
from ._store import refused, translate_errors
from .errors import AntsError, ServerUnavailable
from .log import get_logger
from .reach import Reach

log = get_logger("pull")

_EXPIRY_MARGIN_S = 0.1
"""How much sooner than the local wait the server ends a pull request, so that its end is seen
(at most a fifth of a short wait)."""
_HEARTBEAT = "100"
_NO_MESSAGES = frozenset({"404", "408"})
_NO_RESPONDERS = "503"
"""Nobody answers the pull: no JetStream for the board's domain through this server."""


def filtering(subjects: Sequence[str]) -> dict[str, Any]:
    """A consumer configuration's filter of ``subjects``: one goes in ``filter_subject``, several
    in ``filter_subjects``."""
    if len(subjects) == 1:
        return {"filter_subject": subjects[0]}
    return {"filter_subjects": list(subjects)} if subjects else {}


class Puller:
    """Fetch messages of the pull consumer ``consumer`` on ``stream``, one per ``fetch``.

    Use as ``async with Puller(nc, stream, consumer) as puller``; messages fetched but not handed
    out when it closes are given back to the server (``nak``). ``batch``: how many messages one
    request asks for (the rest of a batch waits for the next ``fetch``s); an agent asks for one at
    a time, so that no ticket waits in one agent while another is idle."""

    def __init__(self, nc: Client, stream: str, consumer: str, *, batch: int = 1) -> None:
        self.consumer = consumer
        self._nc = nc
        self._batch = batch
        self._stream = stream
        self._api = f"{api_prefix(nc)}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._ready: collections.deque[Msg] = collections.deque()
        self._request = 0
        self._answered: asyncio.Future[None] | None = None
        self._failure: str | None = None
        self._unanswered = False
        self._owed = 0
        """Messages the open request may still deliver (a batch's rest arrives on it)."""
        self._open_until = 0.0
        self.answered = False
        """Whether the server answered the last ``fetch`` (a message, or none to give)."""

    @property
    def buffered(self) -> int:
        """Messages arrived and not handed out yet (the next ``fetch`` returns one at once)."""
        return len(self._ready)

    async def __aenter__(self) -> Self:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(nats.errors.Error):
            if self._sub is not None:
                await self._sub.unsubscribe()
            while self._ready:
                await self._ready.popleft().nak()

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        current = msg.subject == f"{self._inbox}.{self._request}"
        if status is None:
            # (a delivery carries its stream subject, not the request's: one request is open at a time)
            self._ready.append(msg)
            self._owed -= 1
        elif status == _HEARTBEAT or not current:
            return  # a keep-alive, or the end of a request we no longer wait for
        elif status in _NO_MESSAGES:
            self._owed = 0  # the request ended (expired, or nothing to give)
        else:
            self._owed = 0
            description = msg.headers.get("Description", "") if msg.headers else ""
            self._unanswered = status == _NO_RESPONDERS
            if self._unanswered:
                description = "no responders"  # (nats-py leaves header lines in this one's)
            if status != "409" or "deleted" in description.lower():
                self._failure = f"{status} {description}".strip()
            else:  # 409s such as a leadership change or too many waiting requests: ask again
                log.debug("pull.conflict", consumer=self.consumer, status=status, description=description)
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)

    async def fetch(
        self, timeout: float, *, acking: Msg | None = None, batch: int | None = None
    ) -> Msg | None:
        """The next message, or None when none came within ``timeout`` seconds. ``acking``: a
        message of this consumer to acknowledge first, in the same publish when a request is due
        (``+NXT``: the acknowledgement asks for the next message, one message where two were).
        ``batch``: how many messages a request made now asks for (instead of the puller's own).

        ``ServerUnavailable`` when the server refuses the pull (e.g. the consumer was deleted); a
        closed connection raises ``nats.errors.ConnectionClosedError``."""
        self.answered = bool(self._ready)
        loop = asyncio.get_running_loop()
        if acking is not None and (self._ready or not acking.reply):
            await acking.ack()
            acking = None
        if not self._ready:
            self._answered = loop.create_future()
            # A batch's request stays open until it has delivered the batch or expires: the rest of
            # it arrives there, and asking again meanwhile would only stack up requests.
            if acking is not None or self._owed <= 0 or loop.time() >= self._open_until:
                self._request += 1
                expires = timeout - min(_EXPIRY_MARGIN_S, timeout / 5)
                size = batch or self._batch
                request = json.dumps({"batch": size, "expires": int(expires * 1e9)}).encode()
                reply = f"{self._inbox}.{self._request}"
                if acking is not None:
                    await self._nc.publish(acking.reply, b"+NXT " + request, reply=reply)
                else:
                    await self._nc.publish(self._api, request, reply=reply)
                self._owed, self._open_until = size, loop.time() + expires
            # No answer in time (e.g. the request was lost in a reconnect): the caller asks again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._answered
                self.answered = self._failure is None
        # A cancellation swallowed by a ``wait_for`` in an earlier request ends the loop here (an
        # unhanded ticket is given back when the puller closes).
        honour_swallowed_cancel()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            error = ServerUnavailable(f"pull from consumer {self.consumer} refused: {failure}")
            if self._unanswered:
                raise error from nats.errors.NoRespondersError()
            raise error
        return self._ready.popleft() if self._ready else None

    async def exists(self) -> bool | None:
        """Whether the consumer is there (None: nobody answered the question)."""
        try:
            await jetstream(self._nc).consumer_info(self._stream, self.consumer, timeout=_INFO_TIMEOUT_S)
        except nats.js.errors.NotFoundError:
            return False
        except nats.errors.Error:
            return None
        return True


_PULL_RETRY_S = 0.5
_INFO_TIMEOUT_S = 1.0


async def fetch_patiently(
    puller: Puller,
    timeout: float,
    reach: Reach | None = None,
    *,
    acking: Msg | None = None,
    batch: int | None = None,
) -> Msg | None:
    """``puller.fetch`` for a pull loop that lives as long as its owner: a failed pull (a
    disconnection, a leader election, nobody answering for the board's domain) is told to
    ``reach`` and answered with None after a short pause, since the client and a site's server
    reconnect by themselves and the server keeps the consumer's position. A closed connection, or a
    pull the server refuses, ends the loop (to be restarted). ``acking``: see ``Puller.fetch`` (an
    acknowledgement lost with a failed pull is redelivered: at least once)."""
    try:
        msg = await puller.fetch(timeout, acking=acking, batch=batch)
    except nats.errors.ConnectionClosedError:
        raise
    except (nats.errors.Error, ServerUnavailable) as exc:
        unanswered = isinstance(exc.__cause__, nats.errors.NoRespondersError)
        if isinstance(exc, ServerUnavailable) and not unanswered:
            raise
        if unanswered and await puller.exists() is False:
            # Not a board out of reach: the consumer is gone (removed while this client was away).
            raise ServerUnavailable(f"consumer {puller.consumer} no longer exists") from exc
        error = str(exc) or type(exc).__name__
        log.debug("pull.failed", consumer=puller.consumer, error=error)
        if reach is not None:
            reach.lost(error)
        await asyncio.sleep(_PULL_RETRY_S)
        return None
    if reach is not None and puller.answered:
        reach.found()
    return msg


_REPLAY_BATCH = 256
_REPLAY_TIMEOUT_S = 5.0


async def _unnamed_consumer(
    js: JetStreamContext, stream: str, config: ConsumerConfig, action: str
) -> ConsumerInfo:
    """A consumer made for one read; one the server refuses (a filter that is no subject) is an
    ``AntsError`` naming the refusal, while a JetStream that does not answer stays what
    ``translate_errors`` makes of it (``ServerUnavailable``: the caller may try again)."""
    try:
        return await js.add_consumer(stream, config=config)
    except nats.js.errors.ServiceUnavailableError:
        raise
    except nats.js.errors.APIError as exc:
        raise refused(action, exc) from exc


async def replay(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    since: datetime | None = None,
    start_seq: int | None = None,
    action: str,
) -> list[Msg]:
    """Every message ``stream`` holds on ``subject`` (from ``since``, or from sequence
    ``start_seq``), in order, through an unnamed pull consumer (read-only users may make those)."""
    policy = DeliverPolicy.ALL
    if since is not None:
        policy = DeliverPolicy.BY_START_TIME
    elif start_seq is not None:
        policy = DeliverPolicy.BY_START_SEQUENCE
    config = ConsumerConfig(
        filter_subject=subject,
        ack_policy=AckPolicy.NONE,
        deliver_policy=policy,
        opt_start_time=since,
        opt_start_seq=start_seq if since is None else None,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    found: list[Msg] = []
    async with translate_errors(action):
        info = await _unnamed_consumer(js, stream, config, action)
        pending = info.num_pending or 0
        async with Puller(js._nc, stream, str(info.name), batch=_REPLAY_BATCH) as puller:
            while pending:
                msg = await puller.fetch(_REPLAY_TIMEOUT_S)
                if msg is None:
                    raise AntsError(f"{action} stalled with {pending} messages left")
                found.append(msg)
                pending = msg.metadata.num_pending
    return found


_LAST_TIMEOUT_S = 1.0
_LAST_INACTIVE_S = 5.0
"""How long the server keeps a ``last_of_each`` consumer once it is no longer pulled from: a reader
asking every moment leaves a few behind, not dozens, each one the stream matches its writes against."""


async def last_of_each(
    js: JetStreamContext, stream: str, subjects: Sequence[str], *, action: str
) -> dict[str, Msg]:
    """The last message ``stream`` holds on each of ``subjects`` (a subject with none is left
    out), read together through one unnamed consumer: one message each instead of a request and
    its reply. It ends when every subject has answered, the server says nothing is pending, or
    nothing more comes for a second (the caller may read what is missing one by one)."""
    config = ConsumerConfig(
        **filtering(subjects),
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=_LAST_INACTIVE_S,  # (soon gone: readers may not delete consumers)
        mem_storage=True,
    )
    found: dict[str, Msg] = {}
    async with translate_errors(action):
        info = await _unnamed_consumer(js, stream, config, action)
        pending = info.num_pending or 0
        async with Puller(js._nc, stream, str(info.name), batch=len(subjects)) as puller:
            while pending and len(found) < len(subjects):
                msg = await puller.fetch(_LAST_TIMEOUT_S)
                if msg is None:
                    break
                found[msg.subject] = msg
                pending = msg.metadata.num_pending
    return found


async def read_back(
    js: JetStreamContext, stream: str, subject: str, *, first: int, last: int, window: int, action: str
) -> AsyncGenerator[tuple[list[Msg], bool], None]:
    """``stream``'s messages on ``subject`` up to sequence ``last``, from ever further back: the
    last ``window`` sequences first, four times as many each time after, until sequence ``first``;
    each reading with whether it reached ``first`` (nothing older is left). A reader that finds
    enough among the newest stops, paying for what it needed rather than for the stream."""
    while True:
        start = max(first, last - window + 1)
        messages = await replay(js, stream, subject, start_seq=start, action=action)
        yield [msg for msg in messages if msg.metadata.sequence.stream <= last], start <= first
        if start <= first:
            return
        window *= 4
