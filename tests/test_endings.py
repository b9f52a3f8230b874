"""``TaskBoard.endings``: a wait for many tasks that hears their ending events (one message a task)
instead of watching every revision of their records, and reads a record only when its ending may
be undone (a failure)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.subscription import Subscription

from ants_nats import Lease, Task, TaskBoard, TaskRecord, TaskStatus
from ants_nats.board import endings as endings_module


async def _claim(board: TaskBoard, task_id: str) -> Lease:
    lease = await board.claim(task_id, "worker")
    assert isinstance(lease, Lease)
    return lease


async def _no_watch(task_ids: object, timeout: float | None = None) -> dict[str, TaskRecord]:
    raise AssertionError("the wait watched the records")


@pytest.mark.parametrize("up_to", [endings_module.PER_TASK_UP_TO, 1], ids=["own-subjects", "every-task"])
async def test_a_wait_hears_each_ending_and_reads_only_the_failures(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch, up_to: int
) -> None:
    monkeypatch.setattr(endings_module, "PER_TASK_UP_TO", up_to)
    extra = 2
    tasks = [
        Task(id="ok", kind="work"),
        Task(id="flaky", kind="work"),
        Task(id="broken", kind="work"),
        Task(id="after", kind="work", depends_on=["broken"]),
        *(Task(id=f"more{i}", kind="work") for i in range(extra)),
    ]
    read: list[str] = []
    get = board.get

    async def counted(task_id: str) -> TaskRecord:
        read.append(task_id)
        return await get(task_id)

    monkeypatch.setattr(board, "wait", _no_watch)
    async with board.endings(t.id for t in tasks) as endings:
        records = await board.submit_many(tasks)
        monkeypatch.setattr(board, "get", counted)
        waiting = asyncio.create_task(endings.wait(30, known=records))
        await board.complete(await _claim(board, "ok"))
        await board.fail(await _claim(board, "flaky"), "try again")  # pending again: not an end
        await board.fail(await _claim(board, "broken"), "no", retry=False)  # blocks "after"
        for i in range(extra):
            await board.complete(await _claim(board, f"more{i}"))
        assert not waiting.done()
        await board.complete(await _claim(board, "flaky"))
        ended = await waiting
    assert ended == {
        "ok": TaskStatus.DONE,
        "flaky": TaskStatus.DONE,
        "broken": TaskStatus.FAILED,
        "after": TaskStatus.FAILED,
        **{f"more{i}": TaskStatus.DONE for i in range(extra)},
    }
    assert set(read) <= {"flaky", "broken", "after"}  # a completion is final as heard; a failure is read


async def test_a_task_ended_before_the_listening_is_known_from_its_record(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    [done] = await board.submit_many([Task(id="early", kind="work")])
    done = await board.complete(await _claim(board, "early"))
    monkeypatch.setattr(board, "wait", _no_watch)
    async with board.endings(["early"]) as endings:
        assert await endings.wait(5, known=[done]) == {"early": TaskStatus.DONE}


async def test_a_wait_that_hears_nothing_watches_the_records(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await board.submit_many([Task(id="early", kind="work"), Task(id="late", kind="work")])
    await board.complete(await _claim(board, "early"))  # before the listening, and not made known
    monkeypatch.setattr(endings_module, "QUIET_S", 0.05)
    async with board.endings(["early", "late"]) as endings:
        waiting = asyncio.create_task(endings.wait(30))
        await board.complete(await _claim(board, "late"))
        assert await waiting == {"early": TaskStatus.DONE, "late": TaskStatus.DONE}


async def test_a_completion_vouches_for_what_its_task_depended_on(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = [
        Task(id="fetch", kind="work"),
        Task(id="parse", kind="work", depends_on=["fetch"]),
        Task(id="sum", kind="work", depends_on=["parse"]),
    ]
    heard: list[str] = []
    subscribe = board.nc.subscribe

    async def noted(subject: str, **kwargs: Any) -> Subscription:
        heard.append(subject)
        return await subscribe(subject, **kwargs)

    monkeypatch.setattr(board, "wait", _no_watch)
    monkeypatch.setattr(board.nc, "subscribe", noted)
    async with board.endings(chain) as endings:
        monkeypatch.undo()
        monkeypatch.setattr(board, "wait", _no_watch)
        records = await board.submit_many(chain)
        waiting = asyncio.create_task(endings.wait(30, known=records))
        for task in chain:
            await board.complete(await _claim(board, task.id))
        assert await waiting == dict.fromkeys(("fetch", "parse", "sum"), TaskStatus.DONE)
    assert {subject.split(".")[4] for subject in heard} == {"sum"}  # the one nothing depends on


@pytest.mark.parametrize("up_to", [endings_module.PER_TASK_UP_TO, 0], ids=["own-subjects", "every-task"])
async def test_a_dependent_that_failed_has_what_it_depended_on_listened_to(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch, up_to: int
) -> None:
    monkeypatch.setattr(endings_module, "PER_TASK_UP_TO", up_to)
    tasks = [
        Task(id="broken", kind="work"),
        Task(id="slow", kind="work"),
        Task(id="both", kind="work", depends_on=["broken", "slow"]),
    ]
    monkeypatch.setattr(board, "wait", _no_watch)
    async with board.endings(tasks) as endings:
        records = await board.submit_many(tasks)
        waiting = asyncio.create_task(endings.wait(30, known=records))
        await board.fail(await _claim(board, "broken"), "no", retry=False)  # blocks "both"
        assert (await board.get("both")).status is TaskStatus.FAILED
        assert not waiting.done()  # "slow" has not ended
        await board.complete(await _claim(board, "slow"))
        assert await waiting == {
            "broken": TaskStatus.FAILED,
            "slow": TaskStatus.DONE,
            "both": TaskStatus.FAILED,
        }
