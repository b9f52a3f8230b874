"""Watching a KV bucket, or some of its keys: the current values first, then every change.

A watch is an ordered push consumer on the bucket's stream that reads every kept revision (not
the server's "last per subject" start: that consumer can stall for good when a key is rolled up
while it starts, as finished task records are). The backlog is folded to the last value per key
before it is handed out, so a reader sees each key once, at its current value, and then changes.

Watching a few keys filters on the server (``filter_subjects``), so its cost follows those keys and
not the size of the bucket; a long list of filters costs the server more than it saves, so a watch
of more than ``MAX_FILTERED_KEYS`` keys reads the bucket and filters here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from contextlib import aclosing, asynccontextmanager
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamState

from ._store import is_tombstone, patiently
from .errors import AntsError

MAX_FILTERED_KEYS = 1000
"""Most keys a watch asks the server to filter on (beyond, it filters the whole bucket itself)."""

_SNAPSHOT_QUIET_S = 0.5
"""A pause in a snapshot's deliveries after which the consumer is asked whether any are left."""

_INACTIVE_S = 300.0
"""The server removes a watch's consumer this long after its client vanished."""
_ONE_PASS_INACTIVE_S = 10.0
"""The same for a single pass over a bucket (``history_only``): one a failure left behind (say,
during an outage, when unsubscribing cannot reach the server) is gone soon."""


def start_policy(since: datetime | None, new_only: bool) -> DeliverPolicy:
    """Where a new consumer starts: at ``since``, else with new messages only (``new_only``), else
    at the stream's first message."""
    if since is not None:
        return DeliverPolicy.BY_START_TIME
    return DeliverPolicy.NEW if new_only else DeliverPolicy.ALL


@asynccontextmanager
async def pushed(
    js: JetStreamContext,
    stream: str,
    subjects: Sequence[str],
    *,
    action: str,
    since: datetime | None = None,
    new_only: bool = False,
    inactive: float = _INACTIVE_S,
) -> AsyncIterator[tuple[JetStreamContext.PushSubscription, asyncio.Queue[Msg]]]:
    """An ordered push consumer of ``subjects`` on ``stream`` (every kept message, those from
    ``since``, or ``new_only``), its messages queued as they arrive; unsubscribed on exit. It
    acknowledges nothing (the client resumes it after a gap), so read-only credentials may use it."""
    arrived: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        arrived.put_nowait(msg)

    policy = start_policy(since, new_only)
    sub = await patiently(
        js,
        action,
        lambda: js.subscribe(
            subjects[0],
            stream=stream,
            cb=deliver,
            ordered_consumer=True,
            deliver_policy=policy,
            inactive_threshold=inactive,
            # Fresh for every attempt (nats-py fills in its inbox). One subject goes in
            # ``filter_subject`` (nats-py's default), several in ``filter_subjects``.
            config=ConsumerConfig(
                filter_subjects=list(subjects) if len(subjects) > 1 else None, opt_start_time=since
            ),
        ),
    )
    try:
        yield sub, arrived
    finally:
        # On a closed connection unsubscribing raises; that must not mask what ended us.
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


async def watch_entries(
    js: JetStreamContext, bucket: str, *, keys: Collection[str] | None = None, history_only: bool = False
) -> AsyncGenerator[tuple[str, bytes | None], None]:
    """Every key of ``bucket`` (or only ``keys``): its current value first, then each change as it
    happens. A deletion, purge or server-side expiry yields ``(key, None)``. With ``history_only``
    the iteration ends once the current values have been delivered."""
    async with aclosing(watch_messages(js, bucket, keys=keys, history_only=history_only)) as messages:
        async for key, msg in messages:
            yield key, (None if is_tombstone(msg.headers) else msg.data or b"")


async def watch_messages(
    js: JetStreamContext, bucket: str, *, keys: Collection[str] | None = None, history_only: bool = False
) -> AsyncGenerator[tuple[str, Msg], None]:
    """``watch_entries``, each change as the message that made it (headers and sequence included)."""
    if keys is not None and not keys:
        return
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."

    async def open_bucket() -> StreamState:
        try:
            return (await js.stream_info(stream)).state
        except nats.js.errors.NotFoundError as exc:
            raise AntsError(f"KV bucket {bucket!r} does not exist (nothing has created it yet)") from exc

    state = await patiently(js, f"watch bucket {bucket}", open_bucket)
    if history_only and state.messages == 0:
        return
    wanted = None if keys is None else frozenset(keys)
    filtered = wanted is not None and len(wanted) <= MAX_FILTERED_KEYS
    subjects = [prefix + key for key in sorted(wanted)] if filtered and wanted else [prefix + ">"]

    def change(msg: Msg) -> tuple[str, Msg] | None:
        key = msg.subject[len(prefix) :]
        if wanted is not None and key not in wanted:
            return None
        return key, msg

    inactive = _ONE_PASS_INACTIVE_S if history_only else _INACTIVE_S
    async with pushed(js, stream, subjects, action=f"watch bucket {bucket}", inactive=inactive) as (
        sub,
        arrived,
    ):
        # The backlog ends when nothing more is pending. A purge can take messages the server had
        # counted as pending, so a quiet moment also ends it once the consumer has none left.
        latest: dict[str, Msg] = {}
        info = await sub.consumer_info()
        backlog = bool(info.num_pending) or (info.delivered is not None and bool(info.delivered.consumer_seq))
        while backlog:
            try:
                async with asyncio.timeout(_SNAPSHOT_QUIET_S):
                    msg = await arrived.get()
            except TimeoutError:
                if arrived.empty() and (await sub.consumer_info()).num_pending == 0:
                    break
                continue
            item = change(msg)
            if item is not None:
                latest.pop(item[0], None)  # keep keys in the order of their last revision
                latest[item[0]] = item[1]
            if msg.metadata.num_pending == 0:
                break
        for item in latest.items():
            yield item
        if history_only:
            return
        while True:
            item = change(await arrived.get())
            if item is not None:
                yield item


async def watch_values(
    js: JetStreamContext, bucket: str, *, keys: Collection[str] | None = None, history_only: bool = False
) -> AsyncGenerator[tuple[str, bytes], None]:
    """Like ``watch_entries``, without deletions."""
    async with aclosing(watch_entries(js, bucket, keys=keys, history_only=history_only)) as entries:
        async for key, value in entries:
            if value is not None:
                yield key, value
