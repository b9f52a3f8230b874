"""Access control enforced by the NATS server, from a generated configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest

from ants_nats import (
    Agent,
    AgentCard,
    EmbeddedServer,
    Identity,
    Lease,
    PermissionDenied,
    Taken,
    Task,
    TaskBoard,
    TaskNotFound,
    TaskStatus,
    TrailEvent,
    connect,
)
from ants_nats._store import Bucket, publish
from ants_nats.access import server_config
from ants_nats.ledger import Ledger
from ants_nats.models import AgentLedger, Counts
from ants_nats.names import lease_key, trail_subject

from .helpers import Recorder

AGENT = Identity.generate()
RIVAL = Identity.generate()
OBSERVER = Identity.generate()
LEDGER = Identity.generate()


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedServer]:
    config = tmp_path_factory.mktemp("auth") / "auth.conf"
    agents = {"ant-a": AGENT.public_key, "ant-b": RIVAL.public_key}
    config.write_text(server_config(agents, {"watcher": OBSERVER.public_key}, {"ledger": LEDGER.public_key}))
    async with EmbeddedServer(extra_args=["-c", str(config)]) as server:
        yield server


async def test_an_agent_works_under_its_permissions(secured: EmbeddedServer) -> None:
    recorder = Recorder()
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        agent = Agent(board, name="a", agent_id="ant-a", identity=AGENT)
        agent.handler("work")(recorder.handle)
        async with agent:
            await board.submit(Task(id="allowed", kind="work"))
            final = await board.wait(["allowed"], timeout=20)
    assert final["allowed"].status is TaskStatus.DONE


async def test_announcing_another_agents_card_is_refused(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        impersonation = AgentCard(id="ant-b", name="b", load=0, capacity=1, software="x")
        with pytest.raises(PermissionDenied, match=r"\$KV\.ants_agents\.ant-b"):
            await board.directory.announce(impersonation)
        # Deleting shared state is refused by the server too: the stream survives.
        with pytest.raises(nats.errors.TimeoutError):
            await board.nc.request("$JS.API.STREAM.DELETE.ANTS_TRAIL", b"", timeout=1)
        assert (await board.nc.jetstream().stream_info("ANTS_TRAIL")).config.name == "ANTS_TRAIL"


async def test_an_observer_reads_but_cannot_write(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        await board.submit(Task(id="visible", kind="work"))
    async with TaskBoard.connect(secured.url, seed=OBSERVER.seed) as observer:
        assert (await observer.get("visible")).task.id == "visible"
        assert "visible" in {r.task.id for r in await observer.all_tasks()}
        # Refused as soon as the server says so, not after the request's 5 s timeout.
        async with asyncio.timeout(2.5):
            with pytest.raises(PermissionDenied, match="refused by the server"):
                await observer.submit(Task(id="sneaky", kind="work"))
        with pytest.raises(TaskNotFound):  # nothing was written
            await observer.get("sneaky")
        with pytest.raises(PermissionDenied):
            await observer.trail.mark("graffiti", key="wall")


async def test_an_observer_cannot_create_the_board(tmp_path: Path) -> None:
    config = tmp_path / "auth.conf"
    config.write_text(server_config({}, {"watcher": OBSERVER.public_key}))
    async with EmbeddedServer(extra_args=["-c", str(config)]) as empty:
        async with asyncio.timeout(2.5):  # refused at once, not retried as if the server were slow
            with pytest.raises(PermissionDenied, match="open bucket ants_tasks"):
                async with TaskBoard.connect(empty.url, seed=OBSERVER.seed):
                    pass


async def test_unknown_credentials_are_rejected(secured: EmbeddedServer) -> None:
    with pytest.raises(PermissionDenied, match="rejected the credentials"):
        async with connect(secured.url, seed=Identity.generate().seed):
            pass


async def test_nobody_can_forge_the_expiry_of_another_agents_lease(secured: EmbeddedServer) -> None:
    async with (
        TaskBoard.connect(secured.url, seed=AGENT.seed) as board,
        TaskBoard.connect(secured.url, seed=RIVAL.seed) as rival,
    ):
        await board.submit(Task(id="mine", kind="work"))
        lease = await board.claim("mine", "ant-a")
        assert isinstance(lease, Lease)
        # The rival writes a server-style expiry marker over ant-a's lease key: the server refuses.
        forged = {"Nats-Marker-Reason": "MaxAge", "KV-Operation": "PURGE"}
        subject = f"$KV.ants_leases.{lease_key('mine', 'ant-a')}"
        with pytest.raises(PermissionDenied):
            await publish(rival.nc.jetstream(), subject, b"", headers=forged)
        held = await rival.claim("mine", "ant-b")
        assert isinstance(held, Taken) and held.reason == "held" and held.holder == "ant-a"
        done = await board.complete(lease, "still mine")
    assert [(a.agent, a.outcome) for a in done.attempts] == [("ant-a", "completed")]


async def test_only_the_ledger_service_writes_the_ledger(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        flattering = AgentLedger(agent="ant-a", totals=Counts(completed=1000)).model_dump_json().encode()
        with pytest.raises(PermissionDenied, match="ants_ledger"):
            await Bucket(board.nc.jetstream(), "ants_ledger").put("ant-a", flattering)
    async with connect(secured.url, seed=LEDGER.seed) as nc:
        ledger = Ledger(nc)
        assert await ledger._update("ant-a", lambda entry: entry.model_copy(update={"last_seq": 1}))
        assert (await ledger.get("ant-a")).totals.completed == 0


async def test_an_agent_lays_trail_events_in_its_own_name_only(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=RIVAL.seed) as rival:
        js = rival.nc.jetstream()
        framing = TrailEvent(kind="task.failed", ref="t", agent="ant-a", by="ant-a", token=1)
        # On ant-a's subject: the server refuses it.
        with pytest.raises(PermissionDenied, match=r"ants\.trail\.task\.failed\.t\.ant-a"):
            await publish(js, trail_subject("task.failed", "t", "ant-a"), framing.model_dump_json().encode())
        # On its own subject but naming ant-a as author: stored, and dropped by every reader.
        await publish(js, trail_subject("task.failed", "t", "ant-b"), framing.model_dump_json().encode())
        # In its own name, or naming nobody: laid, and read.
        await rival.trail.emit(
            TrailEvent(kind="task.failed", ref="t", agent="ant-a", by="ant-b"), signer=RIVAL
        )
        await rival.trail.mark("graffiti", key="wall")
        events = await rival.trail.replay("ants.trail.>")
    assert [(e.kind, e.by) for e in events if e.kind in ("task.failed", "mark.graffiti")] == [
        ("task.failed", "ant-b"),
        ("mark.graffiti", None),
    ]
