"""Stream writes wait for their ack on one subscription per connection (``_store._Acks``): a write
nobody acknowledges times out on its own deadline, kept in order with the others' and checked by
one timer, and an answered write is never timed out."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from ants_nats import EmbeddedServer, _store


async def test_an_unanswered_write_times_out_and_an_answered_one_does_not(
    nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "_ACK_TIMEOUT_S", 0.3)
    nc = await nats.connect(nats_server.url)
    try:
        heard: asyncio.Queue[Msg] = asyncio.Queue()

        async def hear(msg: Msg) -> None:
            heard.put_nowait(msg)

        await nc.subscribe("acks.silent", cb=hear)  # a responder that never answers

        async def echo(msg: Msg) -> None:
            await nc.publish(msg.reply, b'{"stream":"S","seq":7}')

        await nc.subscribe("acks.echo", cb=echo)
        await nc.flush()
        first = asyncio.ensure_future(_store._stored(nc, "acks.silent", b"1", None))
        await heard.get()  # sent: its deadline is the earliest
        assert await _store._stored(nc, "acks.echo", b"2", None) == 7  # answered, in between
        second = asyncio.ensure_future(_store._stored(nc, "acks.silent", b"3", None))
        with pytest.raises(nats.errors.TimeoutError):
            await first
        with pytest.raises(nats.errors.TimeoutError):
            await second
        acks = _store._acks[nc]
        assert not acks._waiting and not acks._deadlines  # nothing left behind
        # A write after a quiet spell is timed out as well (the timer is set again).
        with pytest.raises(nats.errors.TimeoutError):
            await _store._stored(nc, "acks.silent", b"4", None)
        assert await _store._stored(nc, "acks.echo", b"5", None) == 7
    finally:
        await nc.close()
