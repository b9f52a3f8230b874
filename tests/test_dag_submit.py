"""What submitting a DAG costs and returns: the records it wrote are returned as written, unless
something in the submission changed them since (a link to a task outside it, a failure at once)."""

from __future__ import annotations

import pytest

from ants_nats import Task, TaskBoard, TaskRecord, TaskStatus
from ants_nats.board._core import Core


async def test_a_fresh_dag_is_returned_as_written_without_reading_it_back(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    get_entry = Core.get_entry

    async def counted(core: Core, task_id: str) -> tuple[TaskRecord, int]:
        read.append(task_id)
        return await get_entry(core, task_id)

    monkeypatch.setattr(Core, "get_entry", counted)
    records = await board.submit_many(
        [
            Task(id="fetch", kind="work"),
            Task(id="parse", kind="work", depends_on=["fetch"]),
            Task(id="sum", kind="work", depends_on=["parse", "fetch"]),
        ]
    )
    assert read == []
    assert [(r.task.id, r.waiting_on) for r in records] == [
        ("fetch", ()),
        ("parse", ("fetch",)),
        ("sum", ("fetch", "parse")),
    ]
    monkeypatch.undo()
    for record in records:
        assert await board.get(record.task.id) == record


async def test_a_submission_linked_below_a_failed_task_returns_what_the_link_made_of_it(
    board: TaskBoard,
) -> None:
    await board.submit(Task(id="gone", kind="work"))
    await board.cancel("gone")
    late, child = await board.submit_many(
        [
            Task(id="late", kind="work", depends_on=["gone"]),
            Task(id="child", kind="work", depends_on=["late"]),
        ]
    )
    assert late.status is TaskStatus.FAILED and child.status is TaskStatus.FAILED
    assert (child.error or "").startswith("blocked: dependency 'late'")
