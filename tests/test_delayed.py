"""Delayed tasks: ``not_before`` holds a task back, with the server keeping its ticket (no polling)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from ants_nats import EmbeddedServer, InvalidTask, NotTaken, Task, TaskBoard

from .helpers import Recorder, swarm
from .test_cli import run_cli


async def test_a_delayed_task_starts_no_sooner_than_asked(board: TaskBoard) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1)
    await board.submit(Task(id="later", kind="work", not_before=start))
    early = await board.claim("later", "eager")
    assert isinstance(early, NotTaken) and early.reason == "not_yet"
    assert early.retry_after is not None and 0 < early.retry_after <= 1
    async with swarm(board, Recorder(), 1):
        final = (await board.wait(["later"], timeout=20))["later"]
    (attempt,) = final.attempts
    assert attempt.started_at >= start


async def test_not_before_needs_a_time_zone(board: TaskBoard) -> None:
    with pytest.raises(InvalidTask, match="not_before needs a time zone"):
        await board.submit({"id": "naive", "kind": "work", "not_before": "2030-01-01T00:00:00"})


async def test_submit_in_and_at_from_the_command_line(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    url = nats_server.url
    before = datetime.now(UTC)
    result = await asyncio.to_thread(
        run_cli, "submit", "--id", "soon", "--kind", "work", "--in", "90s", "--json", "--server", url
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    not_before = datetime.fromisoformat(record["task"]["not_before"])
    assert before + timedelta(seconds=89) < not_before < datetime.now(UTC) + timedelta(seconds=91)
    at = await asyncio.to_thread(
        run_cli,
        "submit",
        "--id",
        "then",
        "--kind",
        "work",
        "--at",
        "2031-01-01T09:00:00+01:00",
        "--server",
        url,
    )
    assert at.returncode == 0, at.stderr
    assert (await board.get("then")).task.not_before == datetime(2031, 1, 1, 8, tzinfo=UTC)
    bad = await asyncio.to_thread(
        run_cli, "submit", "--id", "x", "--kind", "work", "--in", "soon", "--server", url
    )
    assert bad.returncode == 2 and "--in 'soon'" in bad.stderr
