"""A NATS client this project did not write (the official JavaScript one) reads and writes our state.

Needs node and npm (the npm registry for ``@nats-io/*``); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    Lease,
    LeaseRecord,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
    TrailEvent,
)

SOURCE = Path(__file__).parents[1] / "interop" / "js"


@pytest.fixture(scope="module")
def js_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not on this machine: the JavaScript interop test needs them")
    work = tmp_path_factory.mktemp("js")
    for name in ("package.json", "interop.mjs"):
        shutil.copy(SOURCE / name, work / name)
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if installed.returncode != 0:
        pytest.skip(
            f"npm install of @nats-io clients failed (registry unreachable?): {installed.stderr[-300:]}"
        )
    return work / "interop.mjs"


async def test_the_official_javascript_client_reads_our_state_and_submits_work(
    board: TaskBoard, nats_server: EmbeddedServer, js_client: Path
) -> None:
    await board.submit(Task(id="js-read", kind="work", payload={"n": 1}))
    lease = await board.claim("js-read", "py-agent")
    assert isinstance(lease, Lease)
    node = await asyncio.create_subprocess_exec(
        "node",
        str(js_client),
        nats_server.url,
        "js-read",
        "js-task",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()[-2000:]
    seen = json.loads(out)
    task = TaskRecord.model_validate(seen["task"])
    assert (task.task.id, task.status, task.token) == ("js-read", TaskStatus.CLAIMED, lease.token)
    assert LeaseRecord.model_validate(seen["lease"]).agent == "py-agent"
    event = TrailEvent.model_validate(seen["event"])
    assert (event.kind, event.ref, event.token) == ("task.claimed", "js-read", lease.token)

    async def echo(task: Task, ctx: TaskContext) -> JsonValue:
        return task.payload

    agent = Agent(board, name="py-shouter", capabilities=["shout"])
    agent.handler("echo")(echo)
    async with agent:
        final = await board.wait(["js-task"], timeout=30)
    assert final["js-task"].status is TaskStatus.DONE
    assert final["js-task"].result == {"from": "javascript"}
    assert final["js-task"].task.created_by == "nats.js"
