"""The fast path: what a task costs in messages and bytes, and the deferred claim that keeps it small.

Counts, not times: the server's own /varz counters over a whole run, so a change that adds traffic
to the hot path fails here. Timings are in ``bench/``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    EmbeddedServer,
    Lease,
    LeaseLost,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
    Usage,
)
from ants_nats.names import WORK_STREAM, route_of, work_consumer
from ants_nats.server import monitor_json

from .helpers import Recorder, swarm, until_event, until_tasks

MESSAGE_BUDGET = 10.0
"""Messages through the server per task, submit plus processing (9.0 with one agent, 9.4 with 16:
an agent acknowledges a ticket with its next pull)."""
BYTE_BUDGET = 2 * 1024


async def _noop(task: Task, ctx: TaskContext) -> JsonValue:
    return None


@pytest.mark.parametrize(("agents", "capacity"), [(1, 1), (16, 1), (1, 16)])
async def test_a_task_costs_at_most_ten_messages_and_two_kib(agents: int, capacity: int) -> None:
    tasks = [Task(id=f"b{i:03d}", kind="noop") for i in range(200)]
    config = BoardConfig(lease_ttl=10.0)
    async with (
        EmbeddedServer() as server,
        TaskBoard.connect(server.url, config) as board,
        TaskBoard.connect(server.url, config, name=WAITER) as waiter,
        swarm(board, Recorder(), agents, kind="noop", capacity=capacity),
    ):
        # Warm up: the route, its consumer and every agent's pull are in place before counting.
        await board.submit(Task(id="warm-up", kind="noop"))
        await board.wait(["warm-up"], timeout=30)
        before = await _traffic(server)
        await board.submit_many(tasks)
        final = await waiter.wait([t.id for t in tasks], timeout=120)
        after = await _traffic(server)
        consumer = await board.nc.jetstream().consumer_info(WORK_STREAM, work_consumer(route_of(())))
    # Pulls are sized to the room an agent has: it never holds a ticket it must hand back.
    assert consumer.delivered.consumer_seq == len(tasks) + 1  # each ticket delivered once
    # The waiter's watch is the submitter watching, not coordination: it is left out of the tax.
    messages, volume = ((a - b) / len(tasks) for a, b in zip(after, before, strict=True))
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert all(len(r.attempts) == 1 for r in final.values())  # one claim per task: no herd
    assert messages <= MESSAGE_BUDGET, f"{messages:.2f} messages per task"
    assert volume <= BYTE_BUDGET, f"{volume:.0f} bytes per task"


WAITER = "budget-waiter"


async def _traffic(server: EmbeddedServer) -> tuple[int, int]:
    """Messages and bytes through the server so far, less the waiter connection's share."""
    varz = await monitor_json(server.monitor_port, "/varz")
    connz = await monitor_json(server.monitor_port, "/connz")
    waiter = next(c for c in connz["connections"] if c.get("name") == WAITER)
    messages = varz["in_msgs"] + varz["out_msgs"] - waiter["in_msgs"] - waiter["out_msgs"]
    volume = varz["in_bytes"] + varz["out_bytes"] - waiter["in_bytes"] - waiter["out_bytes"]
    return messages, volume


async def test_a_short_task_goes_from_pending_to_done_in_one_write(board: TaskBoard) -> None:
    async with swarm(board, Recorder(), 1) as (agent,):
        await board.submit(Task(id="quick", kind="work"))
        final = (await board.wait(["quick"], timeout=20))["quick"]
        await until_event(board, "task.completed", "quick")
    assert await _writes_after_submit(board, "quick", final) == 1  # pending -> done
    (attempt,) = final.attempts
    assert (attempt.agent, attempt.outcome, attempt.token) == (agent.id, "completed", final.token)
    kinds = [e.kind for e in await board.trail.history("quick")]
    assert kinds == ["task.submitted", "task.completed"]
    completed = await board.trail.last("task.completed", "quick")
    assert completed is not None and isinstance(completed.data, dict) and completed.data["deferred"] is True


async def test_a_long_task_is_shown_claimed_once_it_has_run_for_claim_after(board: TaskBoard) -> None:
    release = asyncio.Event()

    async def slow(task: Task, ctx: TaskContext) -> JsonValue:
        await release.wait()
        return "slow"

    agent = Agent(board, name="slow")
    agent.handler("work")(slow)
    async with agent:
        await board.submit(Task(id="long", kind="work"))
        seen = await until_tasks(board, lambda r: r.get("long") is not None and r["long"].holder == agent.id)
        claimed = seen["long"]
        assert claimed.status is TaskStatus.CLAIMED and claimed.ticket is not None
        release.set()
        final = (await board.wait(["long"], timeout=20))["long"]
    assert final.result == "slow"
    assert [a.token for a in final.attempts] == [claimed.token]
    assert await _writes_after_submit(board, "long", final) == 2  # pending -> claimed -> done


async def test_a_deferred_claim_loses_to_a_claim_written_first(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def wait_then_finish(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        await release.wait()
        return "late"

    # A claim_after far beyond the few steps below: the claim stays deferred until the release.
    config = replace(board.config, lease_ttl=30.0, claim_after=9.0)
    async with TaskBoard.connect(nats_server.url, config, name="deferring") as deferring:
        rejected = asyncio.Event()
        real_complete = deferring.complete

        async def complete(
            lease: Lease, result: JsonValue = None, *, usage: Usage | None = None
        ) -> TaskRecord:
            try:
                return await real_complete(lease, result, usage=usage)
            except LeaseLost:
                rejected.set()
                raise

        deferring.complete = complete  # type: ignore[method-assign]
        agent = Agent(deferring, name="deferring")
        agent.handler("work")(wait_then_finish)
        async with agent:
            await board.submit(Task(id="raced", kind="work"))
            await started.wait()  # running on a deferred claim: the record still reads pending
            assert (await board.get("raced")).status is TaskStatus.PENDING
            rival = await board.claim("raced", "rival")
            assert isinstance(rival, Lease)
            release.set()
            await rejected.wait()  # the deferred holder's write met the rival's claim
            done = await board.complete(rival, "rival's")
    assert done.result == "rival's"
    assert [(a.agent, a.outcome) for a in done.attempts] == [("rival", "completed")]


async def _writes_after_submit(board: TaskBoard, task_id: str, final: TaskRecord) -> int:
    """Writes of the only task on the board since its submission: its token is the revision it
    was claimed on (the submitted one); revisions count every write to the tasks stream."""
    entry = await board.tasks.get(task_id)
    assert entry is not None and final.token is not None
    return entry.revision - final.token


async def test_a_big_batch_is_written_atomically_and_a_resubmission_falls_back(board: TaskBoard) -> None:
    info = await board.nc.jetstream().stream_info("KV_ants_tasks")
    assert info.config.allow_atomic  # the board opens its streams to atomic batches
    first = [Task(id=f"a{i:03d}", kind="work") for i in range(100)]
    records = await board.submit_many(first)
    assert [r.task.id for r in records] == [t.id for t in first]
    # Taken ids make the atomic batch fail as a whole; the single writes then accept the same
    # tasks as they are and add the new one, with no ticket twice.
    again = await board.submit_many([*first, Task(id="a100", kind="work")])
    assert len(again) == 101
    state = (await board.nc.jetstream().stream_info("ANTS_WORK")).state
    assert state.messages == 101
    kinds = [e.kind for e in await board.trail.history("a000")]
    assert kinds.count("task.submitted") == 1


async def test_streams_from_before_atomic_batches_are_opened_up_to_them(
    nats_server: EmbeddedServer,
) -> None:
    async with TaskBoard.connect(nats_server.url, name="old") as board:
        js = board.nc.jetstream()
        config = (await js.stream_info("ANTS_WORK")).config
        config.allow_atomic = False
        await js.update_stream(config)
    async with TaskBoard.connect(nats_server.url, name="new") as board:
        assert (await board.nc.jetstream().stream_info("ANTS_WORK")).config.allow_atomic
