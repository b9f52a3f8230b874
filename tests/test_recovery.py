"""Crashes between a write and its consequences: nothing stays stuck, no event stays missing.

A "crash" here is a real exception raised at the exact point where a process could die (after the
CAS that changed the task, before the steps that follow it); the rest of that operation never runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    Lease,
    LeaseLost,
    ServerUnavailable,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
)

from .helpers import Recorder


class Crash(Exception):
    """Stands for the process dying at this point."""


@pytest.fixture
async def other_board(nats_server: EmbeddedServer, board: TaskBoard) -> AsyncIterator[TaskBoard]:
    """A second process's view of the same board (its own connection)."""
    async with TaskBoard.connect(nats_server.url, board.config, name="doomed") as other:
        yield other


async def test_finisher_dying_after_its_final_write_leaves_nothing_stuck(
    board: TaskBoard, other_board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await board.submit_many(
        [Task(id="parent", kind="work"), Task(id="child", kind="work", depends_on=["parent"])]
    )
    lease = await other_board.claim("parent", "doomed")
    assert isinstance(lease, Lease)

    async def die(*args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(other_board._core, "event", die)  # dies right after the DONE write
    with pytest.raises(Crash):
        await other_board.complete(lease, "parent's result")
    assert (await board.get("parent")).status is TaskStatus.DONE
    assert (await board.get("child")).waiting_on == ("parent",)
    assert await board.trail.last("task.completed", "parent") is None

    # The parent's ticket, never acked, comes back to some agent; its claim finds the task done.
    taken = await board.claim("parent", "rescuer")
    assert not isinstance(taken, Lease) and taken.reason == "finished"
    completed = await board.trail.last("task.completed", "parent")
    assert completed is not None
    assert (completed.agent, completed.token) == ("doomed", lease.token)
    assert isinstance(completed.data, dict) and completed.data["repaired"] is True
    child = await board.claim("child", "rescuer")
    assert isinstance(child, Lease)
    assert child.task.id == "child"

    # Meeting the finished task again repairs nothing twice.
    await board.claim("parent", "someone-else")
    kinds = [e.kind for e in await board.trail.history("parent")]
    assert kinds.count("task.completed") == 1


async def test_agent_dying_mid_completion_is_finished_by_another(
    board: TaskBoard, other_board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = asyncio.Event()

    async def die_propagating(*args: object, **kwargs: object) -> None:
        crashed.set()
        raise Crash  # after the DONE write and its event: the dependents were never told

    monkeypatch.setattr(other_board._propagation, "propagate", die_propagating)

    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        return task.id

    await board.submit_many(
        [Task(id="first", kind="work"), Task(id="then", kind="work", depends_on=["first"])]
    )
    async with Agent(other_board, name="doomed") as doomed:
        doomed.handler("work")(work)
        await crashed.wait()
    recorder = Recorder()
    async with Agent(board, name="rescuer") as rescuer:
        rescuer.handler("work")(recorder.handle)
        final = await board.wait(["first", "then"], timeout=30)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert final["first"].result == "first"  # done once, by the agent that died
    assert recorder.runs == {"then": 1}


async def test_resubmitting_after_a_crashed_submission_completes_it(
    board: TaskBoard, other_board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = Task(id="orphan", kind="work", payload={"n": 1})

    async def die(*args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(other_board._propagation, "announce_many", die)  # written, never announced
    with pytest.raises(Crash):
        await other_board.submit(task)
    assert (await board.get("orphan")).status is TaskStatus.PENDING

    record = await board.submit(task)  # the caller retries: same task, same id
    assert record.task == task
    assert isinstance(await board.claim("orphan", "worker"), Lease)
    kinds = [e.kind for e in await board.trail.history("orphan")]
    assert kinds.count("task.submitted") == 1
    assert kinds.count("task.ready") >= 1


async def test_resubmitting_a_dependent_links_it_to_its_dependency(
    board: TaskBoard, other_board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await board.submit(Task(id="base", kind="work"))
    dependent = Task(id="on-top", kind="work", depends_on=["base"])

    async def die(*args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(other_board._propagation, "attach", die)  # written, never linked
    with pytest.raises(Crash):
        await other_board.submit(dependent)
    assert (await board.get("base")).dependents == ()

    await board.submit(dependent)
    assert (await board.get("base")).dependents == ("on-top",)
    lease = await board.claim("base", "worker")
    assert isinstance(lease, Lease)
    await board.complete(lease)
    assert (await board.get("on-top")).ready


async def test_a_failed_pull_loop_is_restarted(board: TaskBoard, monkeypatch: pytest.MonkeyPatch) -> None:
    await board.submit(Task(id="still-served", kind="work"))
    original = board.routes.ensure_consumer
    failures: list[str] = []

    async def flaky(route: str, *, express: bool = False) -> None:
        if not failures:  # the first pull loop dies at once, as if the server had been away too long
            failures.append(route)
            raise ServerUnavailable("open consumer: NATS server did not answer (TimeoutError)")
        await original(route, express=express)

    monkeypatch.setattr(board.routes, "ensure_consumer", flaky)
    agent = Agent(board, name="persistent")
    agent.handler("work")(Recorder().handle)
    async with agent:
        final = await board.wait(["still-served"], timeout=30)
    assert failures == ["any"]
    assert final["still-served"].status is TaskStatus.DONE


async def test_repeating_an_ending_whose_answer_was_lost_succeeds_once(board: TaskBoard) -> None:
    await board.submit(Task(id="answered", kind="work"))
    lease = await board.claim("answered", "worker")
    assert isinstance(lease, Lease)
    first = await board.complete(lease, "the result")
    # The reply to that write never arrived (a server restart): the holder writes again.
    again = await board.complete(lease, "the result")
    assert again.status is TaskStatus.DONE and again.attempts == first.attempts
    assert [e.kind for e in await board.trail.history("answered")].count("task.completed") == 1
    # Another ending, or another holder, is still refused.
    with pytest.raises(LeaseLost):
        await board.fail(lease, "changed my mind")


async def test_an_agent_stops_promptly_while_its_server_is_down() -> None:
    async with EmbeddedServer() as server, TaskBoard.connect(server.url) as board:
        agent = Agent(board, name="stranded", shutdown_grace=1.0)
        agent.handler("work")(Recorder().handle)
        await agent.__aenter__()
        await server.stop()
        # Withdrawing the card waits for the server only briefly: it expires on its own.
        async with asyncio.timeout(10):
            await agent.__aexit__(None, None, None)
