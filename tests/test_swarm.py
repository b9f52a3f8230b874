"""Agents dividing work through the board: races, crashes, heartbeats, dependencies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    EmbeddedServer,
    Lease,
    LeaseLost,
    NotTaken,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    Ticket,
)

from .conftest import TEST_LEASE_TTL
from .helpers import Recorder, swarm, until_event


async def test_twenty_agents_two_hundred_tasks_each_done_exactly_once(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims: list[str] = []
    real_take = board.take

    async def counting_take(ticket: Ticket, msg: Msg, agent_id: str, **options: bool) -> Lease | NotTaken:
        claims.append(ticket.task_id)
        return await real_take(ticket, msg, agent_id, **options)

    monkeypatch.setattr(board, "take", counting_take)
    recorder = Recorder()
    tasks = [Task(id=f"t{i:03d}", kind="work", payload=i) for i in range(200)]
    async with swarm(board, recorder, 20):
        await board.submit_many(tasks)
        final = await board.wait([t.id for t in tasks], timeout=60)
    assert all(r.status is TaskStatus.DONE for r in final.values())
    assert recorder.runs == {t.id: 1 for t in tasks}
    assert recorder.overlaps == []
    for record in final.values():
        assert [a.outcome for a in record.attempts] == ["completed"]
        assert record.result == {"task": record.task.id, "agent": record.attempts[0].agent}
    assert len(recorder.by_agent) > 1  # the work was divided, not done by one ant
    # No thundering herd: a ticket reaches one agent, so a task costs one claim, not one per agent.
    assert len(claims) == len(tasks)


async def test_cancelled_agent_work_is_reclaimed_and_its_late_results_rejected(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    held: dict[str, Lease] = {}
    all_claimed = asyncio.Event()

    async def hang(task: Task, ctx: TaskContext) -> JsonValue:
        await ctx.confirm()  # on the record before the crash: the crash must cost an attempt
        held[task.id] = ctx.lease
        if len(held) == 3:
            all_claimed.set()
        await asyncio.Event().wait()  # never finishes
        return None

    ids = ["a", "b", "c"]
    async with TaskBoard.connect(nats_server.url, board.config, name="doomed") as doomed_board:
        doomed = Agent(doomed_board, name="doomed", capacity=3, shutdown_grace=0.1)
        doomed.handler("work")(hang)
        await doomed.__aenter__()
        await board.submit_many([Task(id=i, kind="work") for i in ids])
        await asyncio.wait_for(all_claimed.wait(), 10)
        # Crash: the connection vanishes first, so nothing can be released; then its tasks die.
        await doomed_board.nc.close()
        await doomed.__aexit__(None, None, None)

    recorder = Recorder()
    async with swarm(board, recorder, 2):
        final = await board.wait(ids, timeout=30)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    for record in final.values():
        assert next((a.agent, a.outcome) for a in record.attempts) == (doomed.id, "expired")
    for lease in held.values():
        with pytest.raises(LeaseLost):
            await board.complete(lease, "late")
    assert [(await board.get(i)).result for i in ids] == [final[i].result for i in ids]


AGENT_SCRIPT = Path(__file__).with_name("hanging_agent.py")


async def test_sigkilled_agent_process_work_is_reclaimed(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    ids = [f"k{i}" for i in range(3)]
    await board.submit_many([Task(id=i, kind="work") for i in ids])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(AGENT_SCRIPT),
        nats_server.url,
        str(TEST_LEASE_TTL),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert proc.stdout is not None
    tokens: dict[str, int] = {}
    try:
        while len(tokens) < len(ids):
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "agent process exited early"
            task_id, token = line.decode().split()
            tokens[task_id] = int(token)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    recorder = Recorder()
    async with swarm(board, recorder, 2):
        final = await board.wait(ids, timeout=30)
    for task_id, record in final.items():
        assert record.status is TaskStatus.DONE
        assert (record.attempts[0].outcome, record.attempts[0].token) == ("expired", tokens[task_id])
        zombie = Lease(
            record.task,
            tokens[task_id],
            "killed",
            TEST_LEASE_TTL,
            datetime.now(UTC),
            _record=record,
            _revision=tokens[task_id],
        )
        with pytest.raises(LeaseLost):
            await board.complete(zombie, "late")


async def test_heartbeats_keep_a_long_task_alive(board: TaskBoard) -> None:
    started = asyncio.Event()

    async def slow(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        await asyncio.sleep(3 * TEST_LEASE_TTL)  # the work itself: longer than a lease
        return "slow"

    agent = Agent(board, name="slow")
    agent.handler("work")(slow)
    recorder = Recorder()
    async with agent:
        await board.submit(Task(id="long", kind="work"))
        await asyncio.wait_for(started.wait(), 10)
        async with swarm(board, recorder, 3):  # rivals that would take the task if the lease lapsed
            final = await board.wait(["long"], timeout=30)
    record = final["long"]
    assert record.result == "slow"
    assert [(a.agent, a.outcome) for a in record.attempts] == [(agent.id, "completed")]
    assert recorder.runs == {}


async def test_handler_errors_retry_then_dead_letter(board: TaskBoard) -> None:
    calls: list[str] = []

    async def broken(task: Task, ctx: TaskContext) -> JsonValue:
        calls.append(ctx.lease.agent_id)
        raise ValueError("cannot parse")

    agents = [Agent(board, name=f"b{i}") for i in range(2)]
    for agent in agents:
        agent.handler("work")(broken)
    async with agents[0], agents[1]:
        await board.submit(Task(id="bad", kind="work", max_attempts=3))
        final = await board.wait(["bad"], timeout=30)
    assert final["bad"].status is TaskStatus.DEAD
    assert len(calls) == 3
    assert [a.error for a in final["bad"].attempts] == ["ValueError: cannot parse"] * 3


async def test_handler_timeout_is_a_failure(board: TaskBoard) -> None:
    async def stuck(task: Task, ctx: TaskContext) -> JsonValue:
        await asyncio.Event().wait()
        return None

    agent = Agent(board, name="t", handler_timeout=0.2)
    agent.handler("work")(stuck)
    async with agent:
        await board.submit(Task(id="t", kind="work", max_attempts=1))
        final = await board.wait(["t"], timeout=30)
    assert final["t"].status is TaskStatus.DEAD
    assert final["t"].error == "TimeoutError: handler exceeded 0.2s"


async def test_dag_never_starts_a_task_before_its_dependencies_are_done(board: TaskBoard) -> None:
    violations: list[str] = []
    order: list[str] = []

    async def check(task: Task, ctx: TaskContext) -> JsonValue:
        for dep in task.depends_on:
            if (await board.get(dep)).status is not TaskStatus.DONE:
                violations.append(f"{task.id} started before {dep}")
        order.append(task.id)
        inputs = await ctx.dependency_results()
        return sum(int(v) for v in inputs.values() if isinstance(v, int)) + 1

    agents = [Agent(board, name=f"d{i}", capacity=2) for i in range(4)]
    for agent in agents:
        agent.handler("step")(check)
    # A diamond lattice: every task of layer k depends on all of layer k-1.
    layers = [[f"l{k}n{i}" for i in range(3)] for k in range(4)]
    tasks = [
        Task(id=tid, kind="step", depends_on=tuple(layers[k - 1]) if k else ())
        for k, layer in enumerate(layers)
        for tid in layer
    ]
    async with agents[0], agents[1], agents[2], agents[3]:
        await board.submit_many(list(reversed(tasks)))
        final = await board.wait([t.id for t in tasks], timeout=60)
    assert violations == []
    assert [final[t].result for t in layers[-1]] == [40, 40, 40]  # 1, 4, 13, 40 down the layers
    position = {tid: i for i, tid in enumerate(order)}
    for k in range(1, 4):
        assert max(position[t] for t in layers[k - 1]) < min(position[t] for t in layers[k])


async def test_graceful_shutdown_releases_unfinished_work(board: TaskBoard) -> None:
    started = asyncio.Event()

    async def long(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        await asyncio.Event().wait()
        return None

    quitter = Agent(board, name="quitter", shutdown_grace=0.1)
    quitter.handler("work")(long)
    async with quitter:
        await board.submit(Task(id="w", kind="work"))
        await asyncio.wait_for(started.wait(), 10)
    record = await board.get("w")
    assert record.status is TaskStatus.PENDING
    assert [a.outcome for a in record.attempts] == ["released"]
    recorder = Recorder()
    async with swarm(board, recorder, 1):
        final = await board.wait(["w"], timeout=10)
    assert final["w"].status is TaskStatus.DONE
    assert recorder.runs == {"w": 1}


async def test_server_restart_mid_run_loses_no_task(tmp_path: Path) -> None:
    config = BoardConfig(lease_ttl=TEST_LEASE_TTL, card_ttl=1.5)
    ids = [f"r{i:03d}" for i in range(60)]
    half = asyncio.Event()
    done: set[str] = set()

    async def step(task: Task, ctx: TaskContext) -> JsonValue:
        await asyncio.sleep(0.02)
        done.add(task.id)
        if len(done) >= len(ids) // 3:
            half.set()
        return task.id

    async with (
        EmbeddedServer(store_dir=tmp_path / "store") as server,
        TaskBoard.connect(server.url, config) as board,
    ):
        agents = [Agent(board, name=f"r{i}", capacity=2) for i in range(4)]
        for agent in agents:
            agent.handler("work")(step)
        async with agents[0], agents[1], agents[2], agents[3]:
            await board.submit_many([Task(id=i, kind="work") for i in ids])
            await asyncio.wait_for(half.wait(), 30)
            await server.restart()
            restarted_at = datetime.now(UTC)
            final = await board.wait(ids, timeout=60)
            # The agents re-announce after the reconnect: fresh cards from all of them.
            fresh: set[str] = set()
            async with aclosing(board.directory.watch()) as changes:
                async for change in changes:
                    if change.card is not None and change.card.heartbeat_at > restarted_at:
                        fresh.add(change.agent_id)
                    if fresh >= {a.id for a in agents}:
                        break
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert all(final[i].result == i for i in ids)


async def test_an_abandoned_claim_is_counted_and_taken_over_once_its_lease_expires(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    # A direct claimer vanishes. The tasks' tickets are still queued; the agent they reach finds the
    # claim alive, looks again when the lease key would have expired on the server, then counts the
    # expired attempt and takes over (or dead-letters a task with no attempt left).
    await board.submit_many(
        [
            Task(id="again", kind="work", requires=("x",), max_attempts=2),
            Task(id="last-chance", kind="work", requires=("x",), max_attempts=1),
            Task(id="after", kind="work", depends_on=("last-chance",)),
        ]
    )
    leases = [await board.claim(t, "ghost") for t in ("again", "last-chance")]
    assert all(isinstance(lease, Lease) for lease in leases)
    recorder = Recorder()
    # Claims written at once: a deferred claim would start on the ticket's copy of the record and
    # only learn of the direct claim when writing (its result rejected, the task run twice).
    eager = replace(board.config, claim_after=0.0)
    async with TaskBoard.connect(nats_server.url, eager, name="heir") as heirs_board:
        heir = Agent(heirs_board, name="heir", capabilities=["x"])
        heir.handler("work")(recorder.handle)
        async with heir:
            final = await board.wait(["again", "last-chance", "after"], timeout=30)
    again, last, after = final["again"], final["last-chance"], final["after"]
    assert [(a.agent, a.outcome) for a in again.attempts] == [("ghost", "expired"), (heir.id, "completed")]
    assert last.status is TaskStatus.DEAD
    assert after.error is not None and "dependency 'last-chance' is dead" in after.error
    assert recorder.runs == {"again": 1}
    await until_event(board, "task.expired", "again")
    expired = [e for e in await board.trail.history("again") if e.kind == "task.expired"]
    assert [(e.agent, e.by) for e in expired] == [("ghost", heir.id)]


async def test_express_tasks_overtake_a_backlog(board: TaskBoard) -> None:
    order: list[str] = []

    async def step(task: Task, ctx: TaskContext) -> JsonValue:
        order.append(task.id)
        return None

    backlog = [Task(id=f"n{i}", kind="work") for i in range(6)]
    urgent = [Task(id=f"e{i}", kind="work", priority=5) for i in range(2)]
    await board.submit_many([*backlog, *urgent])  # the express tasks come last
    route = await board.routes.get("any")
    assert route is not None and route.express
    agent = Agent(board, name="one-at-a-time", capacity=1)
    agent.handler("work")(step)
    async with agent:
        final = await board.wait([t.id for t in [*backlog, *urgent]], timeout=30)
        # An idle agent picks up an express task too (its normal-lane wait is kept short).
        await board.submit(Task(id="e-late", kind="work", priority=1))
        final |= await board.wait(["e-late"], timeout=30)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    # FIFO would run them last; the express lane is drained first (in its own FIFO order).
    assert [t for t in order if t.startswith("e")] == ["e0", "e1", "e-late"]
    assert order.index("e1") <= 2, order
