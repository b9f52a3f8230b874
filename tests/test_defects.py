"""Regression tests for defects found by trying the library as a new user would."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ants_nats import EmbeddedServer, InvalidTask, Lease, NotTaken, Task, TaskBoard, TaskStatus
from ants_nats.models import TaskRecord, wire_bytes


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"score": math.nan}, [1, math.inf]])
async def test_nan_and_infinity_are_not_json_and_are_refused(board: TaskBoard, bad: Any) -> None:
    with pytest.raises(InvalidTask, match="payload of task 'nan' is not JSON"):
        await board.submit({"id": "nan", "kind": "work", "payload": bad})
    assert await board.all_tasks() == []
    await board.submit(Task(id="fine", kind="work"))
    lease = await board.claim("fine", "worker")
    assert isinstance(lease, Lease)
    with pytest.raises(InvalidTask, match="result of task 'fine' is not JSON"):
        await board.complete(lease, bad)
    assert (await board.get("fine")).status is TaskStatus.CLAIMED  # nothing was written


async def test_a_deadline_without_a_time_zone_is_refused_and_survived(board: TaskBoard) -> None:
    naive = datetime.now() + timedelta(hours=1)
    with pytest.raises(InvalidTask, match="deadline needs a time zone"):
        await board.submit({"id": "naive", "kind": "work", "deadline": naive.isoformat()})
    # Another client writes such a record anyway: it reads as UTC, and a claim works.
    record = TaskRecord(
        task=Task(id="foreign", kind="work", deadline=datetime.now(UTC) + timedelta(hours=1)),
        status=TaskStatus.PENDING,
    )
    raw = json.loads(wire_bytes(record))
    raw["task"]["deadline"] = naive.isoformat()
    await board.tasks.create("foreign", json.dumps(raw).encode())
    assert (await board.get("foreign")).task.deadline == naive.replace(tzinfo=UTC)
    assert isinstance(await board.claim("foreign", "worker"), Lease)
    # Past deadline, naive too: the claim fails the task instead of crashing.
    raw["task"]["id"] = "late"
    raw["task"]["deadline"] = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    await board.tasks.create("late", json.dumps(raw).encode())
    taken = await board.claim("late", "worker")
    assert isinstance(taken, NotTaken) and taken.status is TaskStatus.FAILED


async def test_too_many_capabilities_are_refused_before_anything_is_written(board: TaskBoard) -> None:
    requires = [f"capability-{i:03d}" for i in range(40)]
    with pytest.raises(InvalidTask, match="route name of"):
        await board.submit({"id": "greedy", "kind": "work", "requires": requires})
    assert await board.all_tasks() == []


@pytest.mark.parametrize("bad", [None, 5, "t1", {"id": "t1", "kind": "work"}])
async def test_submit_many_of_something_else_than_a_list_is_invalid(board: TaskBoard, bad: Any) -> None:
    with pytest.raises(InvalidTask, match="submit_many takes a list of tasks"):
        await board.submit_many(bad)


async def test_a_closed_pipe_ends_the_cli_quietly(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    await board.submit_many([Task(id=f"t{i:04d}", kind="work", payload="x" * 100) for i in range(400)])
    command = f"{sys.executable} -m ants_nats.cli tasks --json --server {nats_server.url} | head -1"
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == "["
