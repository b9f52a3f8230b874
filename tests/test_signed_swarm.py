"""An honest swarm on a signed board: every transition the library makes (claims, deferred and
written; outcomes; a retry and an expiry; a decline; a question and its answer; a DAG; an owner's
cancel) is legal for its signer, so no reader finds a forgery, and a reader that comes later,
with nothing cached, reads the same board."""

from __future__ import annotations

from contextlib import AsyncExitStack

from pydantic import JsonValue

from ants_nats import (
    Agent,
    Decline,
    EmbeddedServer,
    Identity,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
)
from ants_nats.board import BoardConfig
from ants_nats.names import FORGED_RECORD, trail_filter

from .conftest import TEST_CARD_TTL, TEST_LEASE_TTL, fresh_board
from .helpers import until_tasks

OWNER, PICKY, WORKER, QUITTER = (Identity.generate() for _ in range(4))
SIGNED = {"signed": True}


async def test_an_honest_swarm_on_a_signed_board_is_never_taken_for_a_forger(
    nats_server: EmbeddedServer,
) -> None:
    failed_once: set[str] = set()

    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        if task.id == "flaky" and task.id not in failed_once:
            failed_once.add(task.id)
            raise RuntimeError("first try fails")
        if task.kind == "plan":
            return {"region": await ctx.ask("Which region?", timeout=60)}
        return {"task": task.id, "inputs": await ctx.dependency_results()}

    async def picky(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("not my kind of work")

    async with fresh_board(nats_server.url, **SIGNED) as owner, AsyncExitStack() as stack:
        owner.sign_as("owner", OWNER)
        config = BoardConfig(signed=True, lease_ttl=TEST_LEASE_TTL, card_ttl=TEST_CARD_TTL)
        boards = [
            await stack.enter_async_context(TaskBoard.connect(nats_server.url, config)) for _ in range(3)
        ]
        quitter_board = boards[2]
        quitter_board.sign_as("quitter", QUITTER)
        decliner = Agent(boards[0], name="picky", agent_id="picky", identity=PICKY)
        decliner.handler("*")(picky)
        worker = Agent(boards[1], name="worker", agent_id="worker", identity=WORKER)
        worker.handler("*")(work)

        submitted = [
            Task(id="d1", kind="work", created_by="owner"),
            Task(id="d2", kind="work", depends_on=("d1",), created_by="owner"),
            Task(id="flaky", kind="work", created_by="owner"),
            Task(id="plan", kind="plan", created_by="owner"),
            Task(id="lapsed", kind="work", created_by="owner"),
            Task(id="unwanted", kind="never", requires=("nobody",), created_by="owner"),
        ]
        await owner.submit_many(submitted)
        # A claim that lapses: taken directly, never kept alive; another agent ends it and runs the task.
        lapsing = await quitter_board.claim("lapsed", "quitter")
        assert not isinstance(lapsing, str) and lapsing.agent_id == "quitter"
        assert (await owner.cancel("unwanted", by="owner")).status is TaskStatus.CANCELLED

        async with decliner, worker:
            await until_tasks(
                owner, lambda r: r.get("plan") is not None and r["plan"].status is TaskStatus.WAITING_INPUT
            )
            await owner.answer("plan", "eu-west", by="human")  # an unsigned answer is anyone's to give
            final = await owner.wait([t.id for t in submitted if t.id != "unwanted"], timeout=30)
        assert {r.status for r in final.values()} == {TaskStatus.DONE}
        assert await owner.result("plan") == {"region": "eu-west"}
        assert await owner.result("d2") == {"task": "d2", "inputs": {"d1": {"task": "d1", "inputs": {}}}}
        assert [a.outcome for a in final["flaky"].attempts] == ["failed", "completed"]
        assert [a.outcome for a in final["lapsed"].attempts] == ["expired", "completed"]
        assert any(d.agent == "picky" for d in final["d1"].declines + final["flaky"].declines)

        # A reader with nothing cached judges every task's whole history, and finds it all legal.
        async with TaskBoard.connect(nats_server.url) as cold:
            for task in submitted:
                assert (await cold.get(task.id)).status == (await owner.get(task.id)).status
            forged = await cold.trail.replay(trail_filter(FORGED_RECORD))
        assert forged == []
