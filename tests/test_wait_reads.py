"""What ``board.wait()`` reads of every revision it is sent: a revision that plainly does not
finish its task is passed over unparsed, and a record this board wrote itself is not parsed again
(when reading it back would give the very same record)."""

from __future__ import annotations

import json

from pydantic import JsonValue

from ants_nats import Agent, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.board.read import _unfinished


def test_only_values_that_plainly_do_not_finish_a_task_are_passed_over() -> None:
    def value(status: str, payload: JsonValue = None, spaced: bool = False) -> bytes:
        record = {"task": {"id": "t", "kind": "k", "payload": payload}, "status": status}
        return json.dumps(record, separators=(", ", ": ") if spaced else (",", ":")).encode()

    assert _unfinished(value("pending"))
    assert _unfinished(value("claimed", spaced=True))
    assert _unfinished(value("waiting_input", {"status": "pending"}))
    for status in ("done", "failed", "dead", "cancelled"):
        assert not _unfinished(value(status))
        assert not _unfinished(value(status, spaced=True))
        # A payload saying otherwise does not hide the record's own status.
        assert not _unfinished(value(status, {"status": "pending"}))
    # A payload that looks finished only costs a parse.
    assert not _unfinished(value("pending", {"status": "done"}))
    # What it cannot read plainly is parsed: an escaped status, no status at all.
    assert not _unfinished(b'{"task":{"id":"t","kind":"k"},"status":"\\u0064one"}')
    assert not _unfinished(b'{"task":{"id":"t","kind":"k"}}')
    assert not _unfinished(None)


async def test_a_wait_beside_the_agents_gets_the_records_they_wrote(board: TaskBoard) -> None:
    async def answer(task: Task, ctx: TaskContext) -> JsonValue:
        if task.payload == "tuple":
            return (1, {"a": [2.5, True, None]})  # type: ignore[return-value]  # JSON as a list
        return {"echo": task.payload, "n": [1, 2.5, None, False]}

    agent = Agent(board, name="writer")
    agent.handler("work")(answer)
    async with agent:
        tasks = [Task(id="plain", kind="work", payload="x"), Task(id="tuple", kind="work", payload="tuple")]
        await board.submit_many(tasks)
        final = await board.wait([t.id for t in tasks], timeout=20)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    for task_id, record in final.items():
        assert record == await board.get(task_id)  # as any reader reads it
    assert final["plain"].result == {"echo": "x", "n": [1, 2.5, None, False]}
    assert final["tuple"].result == [1, {"a": [2.5, True, None]}]  # read back: a list
