"""Results from the submitter's side: ``board.result`` and the ``get``/``wait``/``submit --wait``
commands with their exit statuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AntsError,
    EmbeddedServer,
    Identity,
    InvalidTask,
    Lease,
    NonRetryable,
    Task,
    TaskBoard,
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskNotFound,
    TaskRecord,
    TaskStatus,
    WaitTimeout,
    jetstream,
)
from ants_nats.names import TASKS_BUCKET

from .conftest import fresh_board
from .helpers import Recorder, swarm
from .test_cli import run_cli


def _count_reads(board: TaskBoard, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the records ``board`` reads from now on."""
    reads: list[str] = []
    get_entry = board._core.get_entry

    async def counted(task_id: str) -> tuple[TaskRecord, int]:
        reads.append(task_id)
        return await get_entry(task_id)

    monkeypatch.setattr(board._core, "get_entry", counted)
    return reads


async def _settle(board: TaskBoard, task_id: str, *, fail: bool = False) -> None:
    lease = await board.claim(task_id, "worker")
    assert isinstance(lease, Lease)
    if fail:
        await board.fail(lease, "it broke", retry=False)
    else:
        await board.complete(lease, {"answer": 42})


async def test_result_returns_or_raises_for_every_ending(board: TaskBoard) -> None:
    await board.submit_many([Task(id=i, kind="work") for i in ("ok", "broken", "dropped", "later")])
    await _settle(board, "ok")
    await _settle(board, "broken", fail=True)
    await board.cancel("dropped", "not needed")
    assert await board.result("ok") == {"answer": 42}
    with pytest.raises(TaskFailed, match="'broken' is failed: it broke"):
        await board.result("broken")
    with pytest.raises(TaskCancelled, match="not needed") as cancelled:
        await board.result("dropped")
    assert isinstance(cancelled.value, TaskFailed)
    with pytest.raises(TaskNotFound):
        await board.result("never-submitted")
    with pytest.raises(WaitTimeout, match=r"not finished within 0.2 s: 'later'") as late:
        await board.result("later", timeout=0.2)
    assert isinstance(late.value, TimeoutError) and isinstance(late.value, AntsError)
    assert late.value.unfinished == ["later"]
    # Every wait says which tasks it gave up on.
    with pytest.raises(WaitTimeout, match=r"0.1 s: 'later'$") as waited:
        await board.wait(["ok", "later"], timeout=0.1)
    assert waited.value.unfinished == ["later"]
    async with board.endings(["ok", "later"]) as endings:
        with pytest.raises(WaitTimeout, match="'later'"):
            await endings.wait(timeout=0.1)
    with pytest.raises(WaitTimeout, match="'nobody-takes-it'"):
        await board.run(Task(id="nobody-takes-it", kind="work"), timeout=0.1)
    waiting = asyncio.create_task(board.result("later", timeout=20))
    await _settle(board, "later")
    assert await waiting == {"answer": 42}


async def test_run_submits_and_hears_the_ending_without_a_consumer(
    nats_server: EmbeddedServer, board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        await release.wait()
        return {"doubled": 2 * int(str(task.payload))}

    async with TaskBoard.connect(nats_server.url, board.config, name="caller") as caller:
        reads = _count_reads(caller, monkeypatch)
        monkeypatch.setattr("ants_nats.board.read._FIRST_RECHECK_S", 60.0)  # no reading on a timer
        agent = Agent(board, name="doubler")
        agent.handler("double")(slow)
        async with agent:
            running = asyncio.create_task(caller.run(Task(id="d", kind="double", payload=21), timeout=20))
            await started.wait()
            # Waiting costs the server nothing kept: no consumer on the tasks' stream (a watch
            # would be one), only plain subscriptions to the task's trail events and record.
            info = await jetstream(caller.nc).stream_info(f"KV_{TASKS_BUCKET}")
            assert info.state.consumer_count == 0
            release.set()
            assert await running == {"doubled": 42}
            # Listening from before the submission, and hearing the write the ending names: no read.
            assert reads == []
            assert await caller.run(Task(id="d", kind="double", payload=21)) == {
                "doubled": 42
            }  # done already


async def test_a_write_the_store_refused_is_not_taken_for_the_record(
    nats_server: EmbeddedServer, board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A zombie's completion, refused by the compare-and-set, reaches plain subscribers all the
    # same; here it is the last write the caller hears before the true holder's ending.
    async def answer(task: Task, ctx: TaskContext) -> JsonValue:
        return "true"

    emit = board._core.event

    async def zombie_first(kind: str, task_id: str, **fields: Any) -> None:
        if kind == "task.completed":
            record = await board.get(task_id)
            late = record.attempts[-1].model_copy(update={"agent": "zombie", "token": 1})
            refused = record.model_copy(update={"result": "stale", "attempts": (*record.attempts[:-1], late)})
            headers = {"Nats-Expected-Last-Subject-Sequence": "0"}  # the key exists: refused
            await board.nc.publish(
                board.tasks.subject(task_id), refused.model_dump_json().encode(), headers=headers
            )
        await emit(kind, task_id, **fields)

    monkeypatch.setattr(board._core, "event", zombie_first)
    async with TaskBoard.connect(nats_server.url, board.config, name="caller") as caller:
        reads = _count_reads(caller, monkeypatch)
        agent = Agent(board, name="answerer")
        agent.handler("ask")(answer)
        async with agent:
            assert await caller.run(Task(id="q", kind="ask"), timeout=20) == "true"
    assert (await board.get("q")).result == "true"
    assert "q" in reads  # the write heard last names another attempt: the record was read


async def test_on_a_signed_board_the_ending_heard_is_only_a_hint(
    nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer(task: Task, ctx: TaskContext) -> JsonValue:
        return "judged"

    async with (
        fresh_board(nats_server.url, signed=True) as signed,
        TaskBoard.connect(nats_server.url, signed.config, name="caller") as caller,
    ):
        caller.sign_as("owner", Identity.generate())
        reads = _count_reads(caller, monkeypatch)
        agent = Agent(signed, name="answerer")
        agent.handler("ask")(answer)
        async with agent:
            assert await caller.run(Task(id="s", kind="ask", created_by="owner"), timeout=20) == "judged"
    # Every reader judges the record itself: what it heard written is nobody's word.
    assert "s" in reads


async def test_an_ending_whose_event_is_lost_is_found_by_reading_again(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ants_nats.board.read._RECHECK_S", 0.1)
    await board.submit(Task(id="quiet", kind="work"))
    waiting = asyncio.create_task(board.result("quiet", timeout=20))
    # Ended behind the trail's back (as if its event were lost to a fault): the record decides.
    record = await board.get("quiet")
    done = record.model_copy(update={"status": TaskStatus.DONE, "result": "found"})
    entry = await board.nc.jetstream().key_value(TASKS_BUCKET)
    await entry.put("quiet", done.model_dump_json().encode())
    assert await waiting == "found"


async def test_waiting_for_a_few_tasks_reads_only_those_tasks(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    # A board of 3,000 tasks: waiting for two of them must not read the other 2,998.
    await board.submit_many([Task(id=f"t{i:04d}", kind="work") for i in range(3000)])
    await _settle(board, "t0007")
    async with TaskBoard.connect(nats_server.url, board.config, name="waiter") as waiter:
        before = waiter.nc.stats["in_msgs"]
        waiting = asyncio.create_task(waiter.wait(["t0007", "t2999"], timeout=20))
        await asyncio.sleep(0)
        await _settle(board, "t2999")
        final = await waiting
        received = waiter.nc.stats["in_msgs"] - before
    assert {r.result["answer"] for r in final.values() if isinstance(r.result, dict)} == {42}
    assert sorted(final) == ["t0007", "t2999"]
    # Each watched task's kept revisions and their changes, plus a few API replies: far below 3,000.
    assert received < 50, received
    with pytest.raises(InvalidTask, match="invalid task id"):
        await board.wait(["not a valid id"], timeout=1)


async def test_get_and_wait_from_the_command_line(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    await board.submit_many([Task(id=i, kind="work") for i in ("done-one", "failed-one", "open-one")])
    await _settle(board, "done-one")
    await _settle(board, "failed-one", fail=True)
    url = nats_server.url

    shown = await asyncio.to_thread(run_cli, "get", "done-one", "--server", url)
    assert shown.returncode == 0, shown.stderr
    assert 'result: {"answer":42}' in shown.stdout
    record = json.loads(
        (await asyncio.to_thread(run_cli, "get", "done-one", "--json", "--server", url)).stdout
    )
    assert record["result"] == {"answer": 42}

    assert (await asyncio.to_thread(run_cli, "wait", "done-one", "--server", url)).returncode == 0
    mixed = await asyncio.to_thread(run_cli, "wait", "done-one", "failed-one", "--server", url)
    assert mixed.returncode == 1 and "it broke" in mixed.stdout
    late = await asyncio.to_thread(run_cli, "wait", "open-one", "--timeout", "0.5", "--server", url)
    assert late.returncode == 2 and "did not finish in time" in late.stderr
    unknown = await asyncio.to_thread(run_cli, "wait", "nope", "--server", url)
    assert unknown.returncode == 2 and "no task 'nope'" in unknown.stderr


async def test_submit_and_wait_prints_the_results(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    async def judge(task: Task, ctx: TaskContext) -> JsonValue:
        if task.payload == "bad":
            raise NonRetryable("bad input")
        return {"echo": task.payload}

    recorder = Recorder()
    async with swarm(board, recorder, 1) as (agent,):
        agent.handler("judge")(judge)
        url = nats_server.url
        good = await asyncio.to_thread(
            run_cli, "submit", "--id", "j1", "--kind", "judge", "--payload", '"hi"', "--wait", "--server", url
        )
        bad = await asyncio.to_thread(
            run_cli,
            "submit",
            "--id",
            "j2",
            "--kind",
            "judge",
            "--payload",
            '"bad"',
            "--wait",
            "--server",
            url,
        )
    assert good.returncode == 0, good.stderr
    assert 'result: {"echo":"hi"}' in good.stdout
    assert bad.returncode == 1 and "NonRetryable: bad input" in bad.stdout
