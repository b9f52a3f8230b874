"""A swarm of mixed versions: the package as it was at a fixed earlier commit (taken from this
repository's history with ``git archive``) works one board beside today's, both ways round, and
nothing either writes is lost (issue "Rolling upgrades", point 4)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import JsonValue

from ants_nats import Agent, EmbeddedServer, Task, TaskContext, TaskStatus
from ants_nats._store import Bucket
from ants_nats.models import PROTOCOL_VERSION
from ants_nats.names import TASKS_BUCKET, trail_filter

from .conftest import fresh_board
from .helpers import until_event

EARLIER = "7aa51f359c78add950c9fbf2ef904b921db81a3b"
"""The first commit with tolerant readers (protocol 2 without ``v`` and ``needs``): the oldest
version a swarm may mix with today's (earlier ones refuse unknown fields: upgrade them first)."""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where ``python -m ants_nats.cli`` runs as the earlier version (its working directory: it
    comes first on ``sys.path``, before today's installed package)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{EARLIER}^{{commit}}"], capture_output=True, check=False
    )
    if found.returncode != 0:
        pytest.skip(f"commit {EARLIER[:7]} is not in this clone's history (a shallow clone?)")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", EARLIER, "ants_nats"], capture_output=True, check=True
    ).stdout
    where = tmp_path_factory.mktemp("earlier")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    yield where


def earlier_cli(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ants_nats.cli", *args],
        check=False,
        cwd=where,
        capture_output=True,
        text=True,
        timeout=60,
    )


@asynccontextmanager
async def earlier_agent(where: Path, url: str) -> AsyncIterator[None]:
    """An agent process of the earlier version, serving ``echo``, until the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ants_nats.cli",
        "agent",
        "--server",
        url,
        "--name",
        "earlier",
        cwd=where,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        await process.wait()


def test_the_earlier_version_is_what_runs(earlier: Path) -> None:
    probe = "import ants_nats, sys; sys.stdout.write(ants_nats.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=earlier, capture_output=True, text=True, check=True
    )
    assert found.stdout == str(earlier / "ants_nats" / "__init__.py")


async def test_earlier_agents_work_todays_tasks_and_keep_what_they_do_not_know(
    nats_server: EmbeddedServer, earlier: Path
) -> None:
    async with fresh_board(nats_server.url) as board, earlier_agent(earlier, nats_server.url):
        await board.submit(Task(id="new-1", kind="echo", payload={"n": 1}, needs=("ask",)))
        assert await board.result("new-1", timeout=30) == {"n": 1}
        completed = await until_event(board, "task.completed", "new-1")
        assert completed.v is None  # laid by the earlier version, which does not stamp one
        entry = await Bucket(board.nc.jetstream(), TASKS_BUCKET).get("new-1")
        assert entry is not None
        stored = json.loads(entry.value)
        # What today's submitter wrote survived the earlier agent's claim and completion.
        assert stored["v"] == PROTOCOL_VERSION and stored["task"]["needs"] == ["ask"]
        assert await board.trail.replay(trail_filter("corrupt.*")) == []


async def test_todays_agents_work_the_earlier_versions_tasks(
    nats_server: EmbeddedServer, earlier: Path
) -> None:
    async with fresh_board(nats_server.url) as board:
        agent = Agent(board, name="today")

        @agent.handler("echo")
        async def echo(task: Task, ctx: TaskContext) -> JsonValue:
            return task.payload

        async with agent:
            submitted = await asyncio.to_thread(
                earlier_cli, earlier, "submit", "--server", nats_server.url, "--id", "old-1", "--kind", "echo"
            )
            assert submitted.returncode == 0, submitted.stderr
            final = (await board.wait(["old-1"], timeout=30))["old-1"]
        assert final.status is TaskStatus.DONE
        assert (await until_event(board, "task.completed", "old-1")).v == PROTOCOL_VERSION
        assert await board.trail.replay(trail_filter("corrupt.*")) == []
