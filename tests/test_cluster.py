"""The board on a 3-node JetStream cluster (R3 buckets), agents spread over the nodes."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from pydantic import JsonValue

from ants_nats import Agent, BoardConfig, EmbeddedCluster, Lease, Task, TaskBoard, TaskContext, TaskStatus

from .conftest import TEST_LEASE_TTL
from .helpers import Recorder, on_log

pytestmark = pytest.mark.cluster


async def test_swarm_over_three_nodes_completes_each_task_once(nats_cluster: EmbeddedCluster) -> None:
    config = BoardConfig(lease_ttl=TEST_LEASE_TTL, replicas=3)
    recorder = Recorder()
    tasks = [Task(id=f"c{i:02d}", kind="work") for i in range(60)]
    async with AsyncExitStack() as stack:
        boards = [
            await stack.enter_async_context(TaskBoard.connect(url, config, name=f"node{i}"))
            for i, url in enumerate(nats_cluster.urls)
        ]
        for i in range(9):
            agent = Agent(boards[i % 3], name=f"ant{i}")
            agent.handler("work")(recorder.handle)
            await stack.enter_async_context(agent)
        await boards[0].submit_many(tasks)
        final = await boards[1].wait([t.id for t in tasks], timeout=60)
        info = await boards[2].nc.jetstream().stream_info("KV_ants_tasks")
    assert info.config.num_replicas == 3
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert recorder.runs == {t.id: 1 for t in tasks}
    assert recorder.overlaps == []


async def test_racing_claims_through_different_nodes_have_one_winner(nats_cluster: EmbeddedCluster) -> None:
    config = BoardConfig(lease_ttl=TEST_LEASE_TTL, replicas=3)
    async with AsyncExitStack() as stack:
        boards = [
            await stack.enter_async_context(TaskBoard.connect(url, config, name=f"racer{i}"))
            for i, url in enumerate(nats_cluster.urls)
        ]
        await boards[0].submit(Task(id="contested", kind="work"))
        outcomes = [await b.claim("contested", f"racer{i}") for i, b in enumerate(boards)]
    assert sum(isinstance(o, Lease) for o in outcomes) == 1


async def test_opening_a_board_waits_for_a_cluster_to_regain_quorum() -> None:
    # A dedicated cluster: this test takes two of its members down.
    async with EmbeddedCluster(size=3, name="quorum") as cluster:
        survivor, *others = cluster.servers
        await asyncio.gather(*(server.stop() for server in others))

        async def open_board() -> list[str]:
            config = BoardConfig(lease_ttl=TEST_LEASE_TTL, replicas=3)
            async with TaskBoard.connect(survivor.url, config, name="patient") as board:
                await board.submit(Task(id="after-quorum", kind="work"))
                return [record.task.id for record in await board.all_tasks()]

        with on_log("store.retry") as retried:
            opening = asyncio.create_task(open_board())
            retry = asyncio.create_task(retried.wait())
            # The survivor alone leaves set-up requests unanswered: the board must retry, not give up.
            await asyncio.wait({opening, retry}, return_when=asyncio.FIRST_COMPLETED)
            retry.cancel()
            assert not opening.done(), opening.exception()
            await asyncio.gather(*(server.start() for server in others))
            assert await opening == ["after-quorum"]


async def test_killing_the_tasks_leader_mid_run_loses_no_task() -> None:
    # A dedicated cluster: this test kills a member. Clients know every member, so they fail over.
    config = BoardConfig(lease_ttl=5.0, replicas=3)
    ids = [f"f{i:02d}" for i in range(40)]
    third = asyncio.Event()
    recorder = Recorder()

    async def step(task: Task, ctx: TaskContext) -> JsonValue:
        result = await recorder.handle(task, ctx)
        if len(recorder.runs) >= len(ids) // 3:
            third.set()
        return result

    async with EmbeddedCluster(size=3, name="failover") as cluster, AsyncExitStack() as stack:
        url = ",".join(cluster.urls)
        board = await stack.enter_async_context(TaskBoard.connect(url, config, name="observer"))
        for i in range(6):
            own = await stack.enter_async_context(TaskBoard.connect(url, config, name=f"f{i}"))
            agent = Agent(own, name=f"f{i}")
            agent.handler("work")(step)
            await stack.enter_async_context(agent)
        await board.submit_many([Task(id=i, kind="work") for i in ids])
        await third.wait()
        info = await board.nc.jetstream().stream_info("KV_ants_tasks")
        assert info.cluster is not None
        leader = next(s for s in cluster.servers if s.name == info.cluster.leader)
        await leader.stop(kill=True)
        final = await board.wait(ids, timeout=90)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert set(recorder.runs) == set(ids)
    assert recorder.overlaps == []
