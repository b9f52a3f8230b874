"""The trail: exact events per board operation, marks, evaporation, followers."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import timedelta

import pytest

from ants_nats import Agent, AntsError, InvalidTask, Lease, Task, TaskBoard, Trail, TrailEvent, connect
from ants_nats.models import utcnow
from ants_nats.names import TRAIL_STREAM, lease_key

from .network import Link


def summary(events: list[TrailEvent]) -> list[tuple[str, str | None, int | None]]:
    return [(e.kind, e.agent, e.token) for e in events]


async def test_each_board_operation_leaves_its_event_in_order(board: TaskBoard) -> None:
    await board.submit(Task(id="t", kind="work", created_by="alice"))
    lease = await board.claim("t", "a")
    assert isinstance(lease, Lease)
    await board.heartbeat(lease)
    await board.complete(lease, 1)
    events = await board.trail.history("t")
    assert summary(events) == [
        ("task.submitted", "alice", None),  # ready at once: no task.ready of its own
        ("task.claimed", "a", lease.token),
        ("task.heartbeat", "a", lease.token),
        ("task.completed", "a", lease.token),
    ]
    seqs = [e.seq or 0 for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert isinstance(events[0].data, dict) and events[0].data["ready"] is True
    assert events[1].data == {"kind": "work", "requires": [], "attempt": 1}


async def test_expiry_failure_and_blocking_are_on_the_trail(board: TaskBoard) -> None:
    await board.submit_many(
        [Task(id="t", kind="work", max_attempts=2), Task(id="child", kind="work", depends_on=("t",))]
    )
    first = await board.claim("t", "a")
    assert isinstance(first, Lease)
    kv = await board.nc.jetstream().key_value("ants_leases")
    watcher = await kv.watch(lease_key("t", "a"))
    async for entry in watcher:  # wait for the server's expiry marker
        if entry is not None and entry.operation is not None:
            break
    await watcher.stop()
    second = await board.claim("t", "b")
    assert isinstance(second, Lease)
    await board.fail(second, "broken")
    events = await board.trail.history("t")
    assert summary(events)[1:] == [
        ("task.claimed", "a", first.token),
        ("task.expired", "a", first.token),
        ("task.claimed", "b", second.token),
        ("task.failed", "b", second.token),
        ("task.dead", None, None),
    ]
    assert events[2].data == {"kind": "work", "requires": [], "noticed_by": "b"}
    child = await board.trail.history("child")
    assert [e.kind for e in child] == ["task.submitted", "task.blocked"]


async def test_marks_evaporate_and_reinforce(board: TaskBoard) -> None:
    trail = board.trail
    half = trail.config.half_life
    await trail.mark("food.found", key="north", agent="a")
    await trail.mark("food.found", key="north", agent="b")  # reinforcement by another agent
    await trail.mark("food.found", key="south", agent="a", intensity=1.5)
    now = utcnow()
    scents = await trail.strongest("ants.trail.mark.food.>", now=now)
    assert [(s.key, s.deposits) for s in scents] == [("north", 2), ("south", 1)]
    assert scents[0].strength == pytest.approx(2.0, rel=1e-3)
    later = await trail.strongest("ants.trail.mark.food.>", now=now + timedelta(seconds=2 * half))
    assert [s.strength for s in later] == pytest.approx([0.5, 0.375], rel=1e-3)


async def test_bad_marks_are_rejected(board: TaskBoard) -> None:
    with pytest.raises(InvalidTask):
        await board.trail.mark("Bad Name", key="k")
    with pytest.raises(InvalidTask):
        await board.trail.mark("ok", key="no.dots")
    with pytest.raises(InvalidTask):
        await board.trail.mark("ok", key="k", intensity=-1)


async def test_replay_from_a_time(board: TaskBoard) -> None:
    await board.trail.mark("tick", key="one")
    cut = utcnow()
    await board.trail.mark("tick", key="two")
    events = await board.trail.replay("ants.trail.mark.>", since=cut)
    assert [e.ref for e in events] == ["two"]


async def test_a_crashed_follower_gets_the_event_again(board: TaskBoard) -> None:
    await board.trail.mark("job", key="j1")

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async for _event in board.trail.follow("ants.trail.mark.>", durable="svc", ack_wait=0.5):
            raise Crash
    seen = []
    async for event in board.trail.follow("ants.trail.mark.>", durable="svc", ack_wait=0.5):
        seen.append(event.ref)
        break
    assert seen == ["j1"]


async def test_a_follow_of_its_own_goes_on_when_its_consumer_is_removed(board: TaskBoard) -> None:
    # (The server removes a follower's own consumer a minute after its client went away: the
    # follow starts a new one after the last event it handed out, neither repeating nor losing.)
    await board.trail.mark("job", key="j1")
    js = board.nc.jetstream()
    seen = []
    async for event in board.trail.follow("ants.trail.mark.>"):
        seen.append(event.ref)
        if event.ref == "j1":
            (consumer,) = await js.consumers_info(TRAIL_STREAM)
            await js.delete_consumer(TRAIL_STREAM, consumer.name)
            await board.trail.mark("job", key="j2")
        else:
            break
    assert seen == ["j1", "j2"]


async def test_batches_start_after_the_sequence_given_in_order_and_say_when_idle(board: TaskBoard) -> None:
    laid = [await board.trail.mark("job", key=f"j{i}") for i in range(5)]
    got: list[list[str]] = []
    async with aclosing(board.trail.follow_batches("ants.trail.mark.>", after=laid[1].seq)) as batches:
        async for batch in batches:
            got.append([event.ref for event in batch])
            if not batch:
                break  # nothing more came for a second: all that was laid after it is handed over
    assert [ref for batch in got for ref in batch] == ["j2", "j3", "j4"]
    assert got[-1] == []


async def test_a_follow_of_its_own_loses_nothing_when_its_connection_breaks(board: TaskBoard) -> None:
    # Events in flight to the follower when its link breaks were sent by the server and never
    # arrived: nothing is acknowledged, so the consumer's sequence (or the reconnection) tells.
    assert board.nc.connected_url is not None and board.nc.connected_url.port is not None
    port, since = board.nc.connected_url.port, utcnow()
    async with Link(port, delay=0.2) as link, connect(f"nats://127.0.0.1:{link.port}") as nc:
        first = asyncio.Event()
        keys = [f"k{i:02d}" for i in range(40)]

        async def follow() -> list[str]:
            seen = []
            async for event in Trail(nc).follow("ants.trail.mark.>", since=since):
                seen.append(event.ref)
                first.set()
                if len(seen) == len(keys):
                    break
            return seen

        follower = asyncio.create_task(follow())
        await board.trail.mark("job", key=keys[0])
        await asyncio.wait_for(first.wait(), 10)  # the follow is pulling
        for key in keys[1:20]:
            await board.trail.mark("job", key=key)
        link.cut()  # events k01.. are still on their way (0.2 s each way): they are lost
        for key in keys[20:]:
            await board.trail.mark("job", key=key)
        link.heal()
        seen = await asyncio.wait_for(follower, 20)
    assert seen == keys


async def test_replicas_sharing_a_durable_handle_each_event_once(board: TaskBoard) -> None:
    keys = [f"k{i}" for i in range(30)]
    handled: dict[str, list[str]] = {"r1": [], "r2": []}
    all_done = asyncio.Event()

    async def replica(name: str) -> None:
        async for event in board.trail.follow("ants.trail.mark.work.>", durable="shared"):
            handled[name].append(event.ref)
            await asyncio.sleep(0)  # let the other replica pull too
            if len(handled["r1"]) + len(handled["r2"]) >= len(keys):
                all_done.set()

    replicas = [asyncio.create_task(replica(n)) for n in handled]
    try:
        for key in keys:
            await board.trail.mark("work", key=key)
        await asyncio.wait_for(all_done.wait(), 20)
    finally:
        for task in replicas:
            task.cancel()
        await asyncio.gather(*replicas, return_exceptions=True)
    assert sorted(handled["r1"] + handled["r2"]) == sorted(keys)
    assert not set(handled["r1"]) & set(handled["r2"])


async def test_agents_leave_joined_and_left_marks(board: TaskBoard) -> None:
    agent = Agent(board, name="scout", capabilities=["look"])
    async with agent:
        pass
    events = await board.trail.replay(f"ants.trail.agent.*.{agent.id}.*")
    assert [e.kind for e in events] == ["agent.joined", "agent.left"]
    # The kinds it handles (none: it registered no handler), as a signed board's readers check them.
    assert events[0].data == {"name": "scout", "capabilities": ["look"], "kinds": [], "capacity": 1}


async def test_an_event_about_no_id_is_dropped_by_every_reader(board: TaskBoard) -> None:
    # A ref becomes a key and a file name for readers (the deployer names files after it).
    evil = TrailEvent(kind="mark.artifact.written", ref="/home/user/.bashrc")
    await board.nc.jetstream().publish(
        "ants.trail.mark.artifact.written./home/user/.bashrc._", evil.model_dump_json().encode()
    )
    await board.trail.mark("artifact.written", key="fine")
    assert [e.ref for e in await board.trail.replay("ants.trail.mark.>")] == ["fine"]


async def test_the_newest_events_are_read_from_the_end_of_a_long_trail(board: TaskBoard) -> None:
    for i in range(10):
        await board.trail.mark("rare.note", key=f"r{i}")
    for i in range(600):  # more than the first look back covers
        await board.trail.mark("common.note", key=f"c{i}")
    rare = await board.trail.newest(5, "ants.trail.mark.rare.note.>")
    assert [e.ref for e in rare] == [f"r{i}" for i in range(5, 10)]
    common = await board.trail.newest(3, "ants.trail.mark.common.note.>")
    assert [e.ref for e in common] == ["c597", "c598", "c599"]
    assert len(await board.trail.newest(100, "ants.trail.mark.rare.note.>")) == 10  # all there are


async def test_a_filter_the_server_refuses_is_an_ants_error_naming_it(board: TaskBoard) -> None:
    for read in (board.trail.replay("ants.trail.bad subject"), board.trail.newest(3, "ants.trail..x")):
        with pytest.raises(AntsError, match="the server refused"):
            await read
