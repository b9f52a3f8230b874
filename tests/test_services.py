"""The independent services, run as the separate processes they are."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest

from ants_nats import Agent, EmbeddedServer, Task, TaskBoard, TaskContext, TaskStatus, TrailEvent
from ants_nats._watch import watch_values
from ants_nats.ledger import AgentLedger, Ledger
from ants_nats.models import utcnow
from ants_nats.server import free_port

ROOT = Path(__file__).parents[1]


@asynccontextmanager
async def service(module: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``python -m services.<module>`` and stop it with SIGTERM; it must exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{module}",
        *args,
        cwd=ROOT,
        env={**os.environ, "ANTS_LOG_LEVEL": "WARNING"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def first_event(board: TaskBoard, subjects: str) -> TrailEvent:
    async for event in board.trail.follow(subjects):
        return event
    raise AssertionError("follow ended")


async def test_deployer_reacts_to_a_mark_from_an_agent_it_does_not_know(
    board: TaskBoard, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    artifact = tmp_path / "build" / "report.html"
    artifact.parent.mkdir()
    artifact.write_text("<h1>done</h1>")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the public")
    (artifact.parent / "link.txt").symlink_to(secret)
    (artifact.parent / "loop-a").symlink_to(artifact.parent / "loop-b")
    (artifact.parent / "loop-b").symlink_to(artifact.parent / "loop-a")
    publish = tmp_path / "public"
    source = ("--source-dir", str(artifact.parent))
    async with service(
        "deployer", "--server", nats_server.url, "--publish-dir", str(publish), *source
    ) as proc:
        since = utcnow()
        # (A relative path is taken from the source directory.)
        await board.trail.mark("artifact.written", key="report", data={"path": "report.html"}, agent="writer")
        deployed = await asyncio.wait_for(first_event(board, "ants.trail.mark.artifact.deployed.>"), 20)
        # A mark naming a file outside the source directory (a link out included) is refused.
        outside = (
            ("ghost", artifact.parent / "nope"),
            ("leak", secret),
            ("link", artifact.parent / "link.txt"),
            ("loop", artifact.parent / "loop-a" / "x"),  # refused, and the deployer goes on
            ("up", artifact.parent / ".." / "secret.txt"),
        )
        for key, path in outside:
            await board.trail.mark("artifact.written", key=key, data={"path": str(path)}, agent="intruder")
        failed = {event.ref: str(event.data) for event in await failed_deploys(board, since, 5)}
        assert proc.returncode is None  # still serving after every refusal
    assert deployed.ref == "report"
    assert (publish / "report.html").read_text() == "<h1>done</h1>"
    assert "no readable file" in failed["ghost"]
    assert "is not under the source directory" in failed["leak"] and "is not under" in failed["link"]
    assert "is not under" in failed["up"] and "loop" in failed
    assert sorted(p.name for p in publish.iterdir()) == ["report.html"]


async def test_a_deployer_without_a_source_dir_takes_no_paths(
    board: TaskBoard, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the public")
    publish = tmp_path / "public"
    async with service("deployer", "--server", nats_server.url, "--publish-dir", str(publish)):
        since = utcnow()
        await board.trail.mark("artifact.written", key="leak", data={"path": str(secret)}, agent="intruder")
        [(key, reason)] = [(event.ref, str(event.data)) for event in await failed_deploys(board, since, 1)]
    assert key == "leak" and "takes no paths" in reason
    assert not publish.exists() or not list(publish.iterdir())


async def failed_deploys(board: TaskBoard, since: datetime, count: int) -> list[TrailEvent]:
    """The first ``count`` ``artifact.deploy_failed`` marks laid from ``since`` on."""
    found: list[TrailEvent] = []
    follow = board.trail.follow("ants.trail.mark.artifact.deploy_failed.>", since=since)
    async with asyncio.timeout(20), aclosing(follow) as events:
        async for event in events:
            found.append(event)
            if len(found) == count:
                break
    return found


async def test_echo_agent_process_serves_its_capability_and_leaves_cleanly(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    args = ("--server", nats_server.url, "--name", "shouter", "--cap", "shout", "--kind", "yell")
    async with service("echo_agent", *args):
        await board.submit(Task(id="y", kind="yell", requires=("shout",), payload={"say": "hi"}))
        final = await board.wait(["y"], timeout=20)
    assert final["y"].status is TaskStatus.DONE
    assert final["y"].result == {"say": "hi"}
    events = await board.trail.replay("ants.trail.agent.>")
    assert [e.kind for e in events] == ["agent.joined", "agent.left"]


async def test_service_with_unreachable_server_exits_2_with_a_message() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.ledger",
        "--server",
        f"nats://127.0.0.1:{free_port()}",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"cannot connect to NATS" in err
    assert b"Traceback" not in err


async def test_ledger_projects_each_agents_history(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    async def ok(task: Task, ctx: TaskContext) -> str:
        return "ok"

    async def bad(task: Task, ctx: TaskContext) -> str:
        raise RuntimeError("nope")

    good_agent = Agent(board, name="good", capabilities=["fetch"])
    good_agent.handler("work")(ok)
    tasks = [Task(id=f"g{i}", kind="work", requires=("fetch",)) for i in range(5)]
    async with good_agent:
        await board.submit_many(tasks)
        await board.wait([t.id for t in tasks], timeout=20)
    bad_agent = Agent(board, name="bad", capabilities=["fetch"])
    bad_agent.handler("work")(bad)
    async with bad_agent:
        await board.submit(Task(id="b0", kind="work", requires=("fetch",), max_attempts=2))
        await board.wait(["b0"], timeout=20)

    ledger = Ledger(board.nc)
    await ledger.ensure()
    projector = asyncio.create_task(ledger.project(board.trail))
    try:
        wanted = {good_agent.id: 5, bad_agent.id: 2}
        seen: dict[str, AgentLedger] = {}
        async with aclosing(watch_values(board.nc.jetstream(), "ants_ledger")) as values:
            async for key, value in values:
                seen[key] = AgentLedger.model_validate_json(value)
                good = seen.get(good_agent.id)
                broken = seen.get(bad_agent.id)
                if good and broken and good.totals.completed == 5 and broken.totals.failed == 2:
                    break
    finally:
        projector.cancel()
        await asyncio.gather(projector, return_exceptions=True)
    assert wanted == {
        good_agent.id: seen[good_agent.id].totals.claimed,
        bad_agent.id: seen[bad_agent.id].totals.claimed,
    }
    assert seen[good_agent.id].by_capability["fetch"].completed == 5
    assert seen[bad_agent.id].by_capability["fetch"].failed == 2
    # Replaying the same events again changes nothing: the projection is idempotent.
    events = await board.trail.replay("ants.trail.task.>")
    assert not any([await ledger.record(e) for e in events])


@pytest.mark.parametrize(
    ("env", "flags", "given"),
    [({}, ["--log-level", "LOUD"], "LOUD"), ({"ANTS_LOG_LEVEL": "loud"}, [], "loud")],
)
def test_a_service_refuses_a_level_that_is_none_naming_itself(
    env: dict[str, str], flags: list[str], given: str
) -> None:
    said = subprocess.run(
        [sys.executable, "-m", "services.ledger", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert said.returncode == 2
    # One line, naming the service (not the path it was started by), as the command line's.
    first = f"ants-ledger: error: argument --log-level: '{given}' is no log level"
    assert said.stderr.startswith(first) and len(said.stderr.splitlines()) == 1, said.stderr


def test_a_service_says_it_starts_and_names_itself_in_its_help() -> None:
    said = subprocess.run(
        [sys.executable, "-m", "services.ledger", "--server", f"nats://alice:s3cret@127.0.0.1:{free_port()}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ANTS_LOG_LEVEL": ""},  # set but empty: not set, so its default, INFO
    )
    assert said.returncode == 2
    first, *_, last = said.stderr.splitlines()
    assert "service.starting" in first and "service=ants-ledger" in first
    assert last.startswith("ants-ledger: error: cannot connect to NATS at nats://127.0.0.1:")
    assert "s3cret" not in said.stderr  # neither its log nor its error shows the password
    helped = subprocess.run(
        [sys.executable, "-m", "services.ledger", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "(bucket 'ants_ledger')" in helped.stdout and "``" not in helped.stdout
