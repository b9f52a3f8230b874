"""Cancel: a pending, waiting or claimed task ends as ``cancelled``; a running handler stops within
a second, whatever its lease; dependents are blocked; the ticket is not worked on again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    Lease,
    LeaseLost,
    Task,
    TaskBoard,
    TaskContext,
    TaskFinished,
    TaskNotFound,
    TaskStatus,
)
from ants_nats.models import TrailEvent
from ants_nats.names import trail_subject

from .conftest import fresh_board
from .helpers import Recorder, swarm, until_event
from .test_cli import run_cli

LONG_LEASE = 30.0
"""Far beyond the one second a cancel may take to reach a running handler."""


@pytest.fixture
async def long_leased(nats_server: EmbeddedServer) -> AsyncIterator[TaskBoard]:
    async with fresh_board(nats_server.url, lease_ttl=LONG_LEASE) as board:
        yield board


async def _work_left(board: TaskBoard) -> int:
    return int((await board.nc.jetstream().stream_info("ANTS_WORK")).state.messages)


async def test_a_pending_task_is_cancelled_once_and_its_dependents_blocked(board: TaskBoard) -> None:
    await board.submit_many(
        [Task(id="wrong", kind="work"), Task(id="after", kind="work", depends_on=["wrong"])]
    )
    record = await board.cancel("wrong", "submitted by mistake")
    assert (record.status, record.error) == (TaskStatus.CANCELLED, "submitted by mistake")
    assert (await board.cancel("wrong", "again")).error == "submitted by mistake"  # a no-op
    event = await until_event(board, "task.cancelled", "wrong")
    assert isinstance(event.data, dict) and event.data["reason"] == "submitted by mistake"
    kinds = [e.kind for e in await board.trail.history("wrong")]
    assert kinds.count("task.cancelled") == 1
    after = await board.get("after")
    assert after.status is TaskStatus.FAILED
    assert after.error == "blocked: dependency 'wrong' is cancelled (submitted by mistake)"

    # An agent that meets the cancelled task's ticket acks it without running anything.
    recorder = Recorder()
    async with swarm(board, recorder, 1):
        await board.submit(Task(id="next", kind="work"))
        await board.wait(["next"], timeout=20)
    assert dict(recorder.runs) == {"next": 1}
    assert await _work_left(board) == 0


async def test_cancelling_a_finished_or_unknown_task_is_a_clear_error(board: TaskBoard) -> None:
    await board.submit(Task(id="finished", kind="work"))
    lease = await board.claim("finished", "worker")
    assert isinstance(lease, Lease)
    await board.complete(lease, "ok")
    with pytest.raises(TaskFinished, match="already done"):
        await board.cancel("finished", "too late")
    assert (await board.get("finished")).status is TaskStatus.DONE
    with pytest.raises(TaskNotFound):
        await board.cancel("no-such-task", "?")


async def test_a_holders_late_result_is_rejected(board: TaskBoard) -> None:
    await board.submit(Task(id="held", kind="work"))
    lease = await board.claim("held", "worker")
    assert isinstance(lease, Lease)
    await board.cancel("held", "not needed")
    with pytest.raises(LeaseLost):
        await board.complete(lease, "late")
    assert (await board.get("held")).status is TaskStatus.CANCELLED


async def test_a_running_handler_stops_within_a_second_and_its_ticket_is_acked(
    long_leased: TaskBoard,
) -> None:
    board = long_leased
    started, stopped = asyncio.Event(), asyncio.Event()
    saw_cancelled: list[bool] = []

    async def endless(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            saw_cancelled.append(ctx.cancelled.is_set())
            stopped.set()
        return None

    agent = Agent(board, name="busy")
    agent.handler("work")(endless)
    async with agent:
        await board.submit(Task(id="endless", kind="work"))
        await started.wait()
        await board.cancel("endless", "taking too long")
        async with asyncio.timeout(1.0):
            await stopped.wait()
        assert saw_cancelled == [True]  # set before the coroutine was cancelled
        # The runner acks the ticket: it is not handed to anyone again.
        agent.handler("work")(Recorder().handle)
        await board.submit(Task(id="probe", kind="work"))
        await board.wait(["probe"], timeout=20)
    # Counted once the agent has stopped: the probe's own ack follows its final write.
    assert await _work_left(board) == 0
    assert (await board.get("endless")).status is TaskStatus.CANCELLED


async def test_cancel_from_the_command_line(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    await board.submit(Task(id="via-cli", kind="work"))
    result = await asyncio.to_thread(
        run_cli, "cancel", "via-cli", "--reason", "operator said so", "--json", "--server", nats_server.url
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # one thing: one object
    assert (shown["status"], shown["error"]) == ("cancelled", "operator said so")
    again = await asyncio.to_thread(run_cli, "cancel", "nope", "--server", nats_server.url)
    assert again.returncode == 2 and "no task 'nope'" in again.stderr


async def test_a_forged_cancel_event_costs_a_retry_not_the_task(long_leased: TaskBoard) -> None:
    board = long_leased
    started = asyncio.Event()
    runs: list[str] = []

    async def first_hangs(task: Task, ctx: TaskContext) -> JsonValue:
        runs.append(task.id)
        if len(runs) == 1:
            started.set()
            await asyncio.Event().wait()
        return "done the second time"

    agent = Agent(board, name="gullible")
    agent.handler("work")(first_hangs)
    async with agent:
        await board.submit(Task(id="victim", kind="work"))
        await started.wait()
        # Anyone may publish on the trail's subjects: the record, not the event, decides.
        forged = TrailEvent(kind="task.cancelled", ref="victim", data={"reason": "forged"})
        subject = trail_subject("task.cancelled", "victim", forged.by)
        await board.nc.publish(subject, forged.model_dump_json().encode())
        final = (await board.wait(["victim"], timeout=20))["victim"]
    assert final.status is TaskStatus.DONE and final.result == "done the second time"
    assert [a.outcome for a in final.attempts] == ["released", "completed"]
