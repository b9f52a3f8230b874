"""Storage does not grow forever: finished records expire (never under an unfinished dependent),
lease tombstones expire, and the trail has a byte cap next to its age."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js.api import KeyValueConfig, RetentionPolicy, StreamConfig

from ants_nats import (
    EmbeddedServer,
    Lease,
    Task,
    TaskBoard,
    TaskNotFound,
    TaskStatus,
    Trail,
    TrailConfig,
    TrailEvent,
    connect,
)
from ants_nats._store import last_message
from ants_nats.names import lease_key

from .conftest import TEST_LEASE_TTL, fresh_board, wipe

FINISHED_TTL = 1.0


@pytest.fixture
async def short_lived(nats_server: EmbeddedServer) -> AsyncIterator[TaskBoard]:
    """A board whose finished records expire after one second."""
    async with fresh_board(nats_server.url, finished_ttl=FINISHED_TTL) as board:
        yield board


async def _expiry_of(board: TaskBoard, task_id: str) -> str | None:
    """The ``Nats-TTL`` the record's current message carries (None: it does not expire)."""
    msg = await last_message(
        board.nc.jetstream(), "KV_ants_tasks", f"$KV.ants_tasks.{task_id}", action="read"
    )
    assert msg is not None
    return (msg.headers or {}).get("Nats-TTL")


async def _until_gone(board: TaskBoard, task_id: str) -> None:
    # The server removes the message on its own timer; there is no event to wait on.
    async with asyncio.timeout(10 * FINISHED_TTL):
        while True:
            try:
                await board.get(task_id)
            except TaskNotFound:
                return
            await asyncio.sleep(0.1)


async def _finish(board: TaskBoard, task_id: str) -> None:
    lease = await board.claim(task_id, "worker")
    assert isinstance(lease, Lease)
    await board.complete(lease, task_id)


async def test_a_finished_record_expires_with_its_history(short_lived: TaskBoard) -> None:
    board = short_lived
    await board.submit(Task(id="once", kind="work"))
    assert await _expiry_of(board, "once") is None  # a pending record never expires
    await _finish(board, "once")
    assert await _expiry_of(board, "once") == f"{round(FINISHED_TTL * 1000)}ms"
    assert [e.revision for e in await board.tasks.history("once")] == [
        (await board.tasks.get("once") or pytest.fail("gone too soon")).revision
    ]  # the final record replaced the history
    await _until_gone(board, "once")
    # Its id is free again, and its events stay on the trail.
    assert (await board.submit(Task(id="once", kind="work"))).status is TaskStatus.PENDING
    assert await board.trail.last("task.completed", "once") is not None


async def test_a_record_stays_while_a_dependent_still_needs_it(short_lived: TaskBoard) -> None:
    board = short_lived
    await board.submit_many(
        [
            Task(id="parent", kind="work"),
            Task(id="other", kind="work"),
            Task(id="child", kind="work", depends_on=["parent", "other"]),
        ]
    )
    await _finish(board, "parent")
    # The child still waits on "other" and will read the parent's result when it runs.
    assert await _expiry_of(board, "parent") is None
    await _finish(board, "other")
    assert await _expiry_of(board, "parent") is None
    await _finish(board, "child")
    # The child is finished: nothing needs the parents any more.
    for task_id in ("parent", "other", "child"):
        assert await _expiry_of(board, task_id) is not None
    await _until_gone(board, "parent")


async def test_records_are_kept_forever_when_asked(nats_server: EmbeddedServer) -> None:
    async with fresh_board(nats_server.url, finished_ttl=None) as board:
        await board.submit(Task(id="kept", kind="work"))
        await _finish(board, "kept")
        assert await _expiry_of(board, "kept") is None


async def test_a_direct_claims_lease_tombstone_expires(board: TaskBoard) -> None:
    await board.submit(Task(id="leased", kind="work"))
    await _finish(board, "leased")
    subject = f"$KV.ants_leases.{lease_key('leased', 'worker')}"
    msg = await last_message(board.nc.jetstream(), "KV_ants_leases", subject, action="read")
    assert msg is not None and (msg.headers or {}).get("KV-Operation") == "DEL"
    assert (msg.headers or {}).get("Nats-TTL") == f"{round(TEST_LEASE_TTL * 1000)}ms"


async def test_the_trail_drops_its_oldest_events_beyond_its_byte_cap(nats_server: EmbeddedServer) -> None:
    await wipe(nats_server.url)
    cap = 64 * 1024
    async with TaskBoard.connect(nats_server.url) as board:
        await board.nc.jetstream().delete_stream("ANTS_TRAIL")  # re-made with a small cap below
        trail = Trail(board.nc, TrailConfig(max_bytes=cap))
        await trail.ensure()
        for i in range(400):
            await trail.emit(TrailEvent(kind="task.progress", ref=f"t{i}", data={"pad": "x" * 200}))
        state = (await board.nc.jetstream().stream_info("ANTS_TRAIL")).state
    assert state.bytes <= cap
    assert state.first_seq > 1 and state.last_seq == 400  # the oldest went, the newest stayed


async def test_the_ticket_stream_takes_direct_gets_even_when_made_without(
    nats_server: EmbeddedServer,
) -> None:
    # A stream made before direct gets were asked for (as by an older release) is opened up.
    await wipe(nats_server.url)
    async with connect(nats_server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="ANTS_WORK", subjects=["ants.work.>"], retention=RetentionPolicy.WORK_QUEUE)
        )
        async with TaskBoard.connect(nats_server.url) as board:
            await board.submit(Task(id="viewable", kind="work"))
        assert (await js.stream_info("ANTS_WORK")).config.allow_direct
        ticket = await js.get_msg("ANTS_WORK", subject="ants.work.any", direct=True)
        assert b'"task_id":"viewable"' in (ticket.data or b"")


async def test_an_older_leases_bucket_keeps_two_revisions_once_a_board_opens_it(
    nats_server: EmbeddedServer,
) -> None:
    # Two revisions per key let a deletion be compared with the lease it ended (forged expiries).
    await wipe(nats_server.url)
    async with connect(nats_server.url) as nc:
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket="ants_leases", history=1))
        async with TaskBoard.connect(nats_server.url):
            pass
        assert (await js.stream_info("KV_ants_leases")).config.max_msgs_per_subject == 2
