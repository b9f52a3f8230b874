"""A NATS client this project did not write (the official JavaScript one) reads and writes our state,
and signs trail events that our verifier accepts (and ours, that it can check).

Needs node and npm (the npm registry for ``@nats-io/*``); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
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
    Verifier,
)
from ants_nats.identity import Identity
from ants_nats.models import wire_bytes
from ants_nats.names import trail_subject

SOURCE = Path(__file__).parents[1] / "interop" / "js"


@pytest.fixture(scope="module")
def js_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not on this machine: the JavaScript interop test needs them")
    work = tmp_path_factory.mktemp("js")
    for name in ("package.json", "interop.mjs", "sign.mjs"):
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


async def test_events_a_javascript_agent_signs_over_its_own_json_are_verified(
    board: TaskBoard, nats_server: EmbeddedServer, js_client: Path
) -> None:
    # Ours first, for the JavaScript side to check with nothing but the documented rules.
    ours = Identity.generate()
    laid_by_us = TrailEvent(kind="mark.interop.python", ref="py-1", agent="py-ant", by="py-ant", data=1.0)
    await board.trail.emit(laid_by_us, signer=ours)
    theirs = Identity.generate()
    node = await asyncio.create_subprocess_exec(
        "node",
        str(js_client.parent / "sign.mjs"),
        nats_server.url,
        "js-ant",
        trail_subject(laid_by_us.kind, laid_by_us.ref, laid_by_us.by),
        env={**os.environ, "ANTS_SEED": theirs.seed},  # a secret: not on the command line
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()[-2000:]
    seen = json.loads(out)
    assert seen["public_key"] == theirs.public_key
    # Our signature checks out in JavaScript, over the bytes alone (and no longer sits in the body).
    assert seen["python"] == {
        "signer": ours.public_key,
        "verified": True,
        "altered": False,
        "body_has_sig": False,
    }

    events = {e.ref: e for e in await board.trail.replay("ants.trail.mark.interop.signed.>")}
    assert {ref: e.seq for ref, e in events.items()} == seen["laid"]
    verifier = Verifier(board.directory)  # reads the card the JavaScript agent announced
    checks = {ref: await verifier.check(e) for ref, e in events.items()}
    assert checks == {
        "js-signed": "verified",
        "js-padded": "verified",  # base64url with padding is accepted too
        "js-tampered": "forged",  # the payload changed after signing
        "js-payload-only": "forged",  # the signature must cover the subject as well
        "js-impostor": "forged",  # a good signature by a key that is not on the author's card
        "js-body-agrees": "verified",  # old body fields too: the headers rule (the body sig is not read)
        "js-body-disagrees": "forged",  # ... and a body signer other than Ants-Signer is a contradiction
    }

    genuine = events["js-signed"]
    assert genuine.stored is not None
    _, payload, headers = genuine.stored
    # Their JSON is not ours (millisecond "Z" timestamps, 1 for 1.0, their key order): verifying a
    # re-serialisation, as before, would have called this genuine event forged.
    assert b'"intensity":1,' in payload and payload.startswith(b'{"by":"js-ant"')
    assert wire_bytes(genuine, exclude={"seq"}) != payload
    # What was read cannot be changed and still pass: not its fields, not its subject.
    altered = genuine.model_copy(update={"data": {"lang": "python"}})
    assert await verifier.check(altered) == "forged"
    moved = genuine.stored_as(trail_subject(genuine.kind, "js-padded", genuine.by), payload, headers)
    assert await verifier.check(moved) == "forged"
