"""Tolerant readers: values a newer version wrote, with fields this one does not know, are read,
worked on, and written back with those fields unchanged (issue "Rolling upgrades", point 1)."""

from __future__ import annotations

import json

import pytest
from pydantic import JsonValue

from ants_nats import Agent, Identity, InvalidTask, Task, TaskBoard, TaskContext, TaskStatus, Verifier
from ants_nats._store import Bucket
from ants_nats.board.submit import parse_task
from ants_nats.models import FEATURES, PROTOCOL_VERSION, Route, TaskRecord, TrailEvent, parse_or_none
from ants_nats.names import ROUTES_BUCKET, TASKS_BUCKET, trail_filter, trail_subject, work_subject

from .helpers import until_event, until_tasks


async def submit_as_a_newer_client(board: TaskBoard, task_id: str) -> None:
    """The recipe for another client (docs/protocol.md), as a newer version would follow it: the record, its
    spec and the ticket each carry a field this version does not know."""
    js = board.nc.jetstream()
    spec = {"id": task_id, "kind": "echo", "payload": {"n": 1}, "x_hint": "fast"}
    record = {"task": spec, "status": "pending", "x_future": {"v": 2}}
    revision = await Bucket(js, TASKS_BUCKET).create(task_id, json.dumps(record).encode())
    routes = Bucket(js, ROUTES_BUCKET)
    if await routes.get("any") is None:
        await routes.create("any", Route(requires=()).model_dump_json().encode())
    ticket = {"task_id": task_id, "route": "any", "revision": revision, "record": record, "x_trace": "t-1"}
    headers = {"Nats-Msg-Id": f"ticket-{task_id}"}
    await js.publish(work_subject("any"), json.dumps(ticket).encode(), headers=headers)


async def test_a_newer_clients_fields_are_kept_and_its_task_is_done(board: TaskBoard) -> None:
    agent = Agent(board, name="older")

    @agent.handler("echo")
    async def echo(task: Task, ctx: TaskContext) -> JsonValue:
        return task.payload

    async with agent:
        await submit_as_a_newer_client(board, "future-1")
        final = (await board.wait(["future-1"], timeout=20))["future-1"]
    assert final.status is TaskStatus.DONE and final.result == {"n": 1}
    # What the newer client wrote survives this version's rewrites (claim and completion).
    entry = await Bucket(board.nc.jetstream(), TASKS_BUCKET).get("future-1")
    assert entry is not None
    stored = json.loads(entry.value)
    assert stored["x_future"] == {"v": 2} and stored["task"]["x_hint"] == "fast"
    assert stored["status"] == "done"
    corrupt = await board.trail.replay(trail_filter("corrupt.*"))
    assert corrupt == []


def test_a_caller_still_gets_unknown_fields_refused() -> None:
    with pytest.raises(InvalidTask, match="unknown field"):
        Task(id="t", kind="k", pritority=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidTask, match="pritority"):
        parse_task({"id": "t", "kind": "k", "pritority": 3})
    # Read off the wire, the same field is kept, not refused.
    read = parse_or_none(
        TaskRecord, b'{"task": {"id": "t", "kind": "k", "pritority": 3}, "status": "pending"}', where="t"
    )
    assert read is not None and read.task.model_extra == {"pritority": 3}
    # Garbage is still garbage: a known field that does not validate.
    assert (
        parse_or_none(TaskRecord, b'{"task": {"id": "t", "kind": "k"}, "status": "sleeping"}', where="t")
        is None
    )
    assert parse_or_none(TrailEvent, b"not json", where="t") is None


class NewerAgent(Agent):
    """An agent of a later version: it understands a feature this one does not."""

    features = FEATURES | {"teleport"}


async def test_a_task_that_needs_a_feature_goes_only_to_agents_that_have_it(board: TaskBoard) -> None:
    async def echo(task: Task, ctx: TaskContext) -> JsonValue:
        return {"by": ctx.lease.agent_id}

    older, newer = Agent(board, name="older"), NewerAgent(board, name="newer")
    older.handler("echo")(echo)
    newer.handler("echo")(echo)
    async with older:
        await board.submit(Task(id="beam", kind="echo", needs=("teleport",)))
        seen = await until_tasks(board, lambda r: "beam" in r and bool(r["beam"].declines))
        [note] = seen["beam"].declines
        assert note.agent == older.id and "needs teleport" in note.reason
        assert seen["beam"].attempts == ()  # a free decline: no attempt, no reputation cost
        async with newer:
            assert await board.result("beam", timeout=20) == {"by": newer.id}
    # Both say which protocol they speak: the record, and the events laid for it.
    entry = await Bucket(board.nc.jetstream(), TASKS_BUCKET).get("beam")
    assert entry is not None and json.loads(entry.value)["v"] == PROTOCOL_VERSION
    completed = await until_event(board, "task.completed", "beam")
    assert completed.v == PROTOCOL_VERSION


async def test_an_event_with_fields_this_version_does_not_know_still_verifies(board: TaskBoard) -> None:
    identity = Identity.generate()
    agent = Agent(board, name="signer", identity=identity)
    async with agent:
        subject = trail_subject("mark.note", "topic", agent.id)
        payload = json.dumps(
            {"kind": "mark.note", "ref": "topic", "by": agent.id, "v": 3, "x_new": {"nested": [1, 2]}}
        ).encode()
        await board.nc.jetstream().publish(subject, payload, headers=identity.sign_message(subject, payload))
        event = await until_event(board, "mark.note", "topic")
        assert event.model_extra == {"x_new": {"nested": [1, 2]}}
        assert await Verifier(board.directory).check(event) == "verified"
