"""Access control enforced by the NATS server, from a generated configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import ConsumerConfig
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AgentCard,
    Budget,
    EmbeddedServer,
    Identity,
    PermissionDenied,
    Task,
    TaskBoard,
    TaskContext,
    TaskNotFound,
    TaskStatus,
    connect,
)
from ants_nats.access import server_config

from .conftest import AGENT, OBSERVER
from .helpers import on_log


async def test_an_agent_works_under_its_permissions(secured: EmbeddedServer) -> None:
    with on_log("stream.upgrade_unavailable") as refused_upgrade:
        await _work_under_permissions(secured)
    # The agent made the board itself, every stream as it needs it: nothing to reconfigure later
    # (which it may not do).
    assert not refused_upgrade.is_set()


async def _work_under_permissions(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        agent = Agent(board, name="a", agent_id="ant-a", identity=AGENT)

        @agent.handler("work")
        async def handle(task: Task, ctx: TaskContext) -> JsonValue:
            ctx.usage(tokens_in=3)
            return "ok"

        # Reserving from a shared limit and charging a budget are within an agent's permissions.
        await board.set_limit("any", requests=10, tokens=1000)
        async with agent:
            await board.submit(Task(id="allowed", kind="work"), budget=Budget(id="allowed", tokens=100))
            final = await board.wait(["allowed"], timeout=20)
        assert final["allowed"].status is TaskStatus.DONE
        assert (await board.budget("allowed")).spent.tokens == 3


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
        assert "task.submitted" in {e.kind for e in await observer.trail.history("visible")}
        # Refused as soon as the server says so, not after the request's 5 s timeout.
        async with asyncio.timeout(2.5):
            with pytest.raises(PermissionDenied, match="refused by the server"):
                await observer.submit(Task(id="sneaky", kind="work"))
        with pytest.raises(TaskNotFound):  # nothing was written
            await observer.get("sneaky")
        with pytest.raises(PermissionDenied):
            await observer.trail.mark("graffiti", key="wall")
        # Nor may it change how a shared consumer delivers (a route's, here).
        with pytest.raises(nats.errors.TimeoutError):
            await observer.nc.jetstream().add_consumer(
                "ANTS_WORK", ConsumerConfig(durable_name="work_any", ack_wait=1.0), timeout=1
            )


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
