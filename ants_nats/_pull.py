"""Pulling from a JetStream consumer without losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` (used inside nats-py's ``fetch``) swallows a cancellation that
arrives just as a message does (CPython gh-86296): the task is marked as cancelling but keeps
running, so shutting down a pull loop could hang forever. ``fetch`` re-raises it.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext


async def fetch(sub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to ``batch`` messages, or ``[]`` when none came within ``timeout`` seconds."""
    try:
        msgs = await sub.fetch(batch, timeout=timeout)
    except (nats.errors.TimeoutError, TimeoutError):
        msgs = []
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # Messages fetched here are not acked: the server redelivers them after their ack wait.
        raise asyncio.CancelledError
    return msgs
