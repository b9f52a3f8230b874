"""The DAG's bookkeeping on a signed board: a finished record is kept whole there (no expiry), so
a dependent that ends notes nothing on its dependencies' records (``finished_dependents`` only
lets a record expire)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

from pydantic import JsonValue

from ants_nats import Agent, EmbeddedServer, Identity, Lease, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.board import BoardConfig

from .conftest import TEST_CARD_TTL, TEST_LEASE_TTL, fresh_board

OWNER, WORKER = Identity.generate(), Identity.generate()


async def test_a_signed_board_notes_no_finished_dependent(nats_server: EmbeddedServer) -> None:
    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        return {"task": task.id, "inputs": await ctx.dependency_results()}

    async with fresh_board(nats_server.url, signed=True) as owner, AsyncExitStack() as stack:
        owner.sign_as("owner", OWNER)
        config = BoardConfig(signed=True, lease_ttl=TEST_LEASE_TTL, card_ttl=TEST_CARD_TTL)
        board = await stack.enter_async_context(TaskBoard.connect(nats_server.url, config))
        worker = Agent(board, name="worker", agent_id="worker", identity=WORKER)
        worker.handler("*")(work)
        chain = [
            Task(id="d1", kind="work", created_by="owner"),
            Task(id="d2", kind="work", depends_on=("d1",), created_by="owner"),
        ]
        async with owner.endings(chain) as endings, worker:
            records = await owner.submit_many(chain)
            assert await endings.wait(30, known=records) == dict.fromkeys(("d1", "d2"), TaskStatus.DONE)
        d1 = await owner.get("d1")
        assert d1.status is TaskStatus.DONE and d1.finished_dependents == ()
        assert await owner.result("d2") == {"task": "d2", "inputs": {"d1": {"task": "d1", "inputs": {}}}}


async def test_a_dependent_written_by_a_newer_version_is_announced(board: TaskBoard) -> None:
    await board.submit_many(
        [Task(id="first", kind="work"), Task(id="then", kind="work", depends_on=["first"])]
    )
    entry = await board.tasks.get("then")
    assert entry is not None
    newer = json.loads(entry.value) | {"from_the_future": 1}
    await board.tasks.update("then", json.dumps(newer).encode(), last=entry.revision)
    lease = await board.claim("first", "worker")
    assert isinstance(lease, Lease)
    await board.complete(lease)
    then = await board.get("then")
    assert then.ready and then.model_extra == {"from_the_future": 1}
