"""The ledger's projection: in batches, from the position it keeps, each event counted once however
often it is read (a restart, replicas, an earlier version's durable consumer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

from nats.js.api import AckPolicy, ConsumerConfig

from ants_nats import Agent, Lease, Task, TaskBoard, TaskContext, Trail
from ants_nats._store import Bucket, last_message
from ants_nats._watch import watch_values
from ants_nats.ledger import Ledger
from ants_nats.models import AgentLedger
from ants_nats.names import COUNTED_BUCKET, TRAIL_STREAM
from tests.helpers import until_ledger


@asynccontextmanager
async def projecting(board: TaskBoard, durable: str = "ledger") -> AsyncIterator[Ledger]:
    """The ledger's projection running under ``durable`` on its own connection, cancelled on exit."""
    ledger = Ledger(board.nc)
    task = asyncio.create_task(ledger.project(Trail(board.nc), durable=durable))
    try:
        yield ledger
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until_position(board: TaskBoard, durable: str, at_least: int) -> int:
    """The position projection ``durable`` wrote, once it is ``at_least`` that trail sequence."""
    key = f"position.{durable}"
    async with aclosing(watch_values(board.nc.jetstream(), COUNTED_BUCKET, keys=[key])) as values:
        async for _, value in values:
            seq = int(value.split()[0])  # (then when the trail was made)
            if seq >= at_least:
                return seq
    raise AssertionError("watch ended")


async def last_seq(board: TaskBoard, kind: str = "task.>") -> int:
    """The trail sequence of the last event under ``kind``."""
    msg = await last_message(board.nc.jetstream(), TRAIL_STREAM, f"ants.trail.{kind}", action="read")
    assert msg is not None and msg.seq is not None
    return int(msg.seq)


async def run_tasks(board: TaskBoard, agent: Agent, prefix: str, n: int) -> None:
    tasks = [Task(id=f"{prefix}{i}", kind="work", requires=("fetch",)) for i in range(n)]
    async with agent:
        await board.submit_many(tasks)
        await board.wait([t.id for t in tasks], timeout=20)


def worker(board: TaskBoard) -> Agent:
    agent = Agent(board, name="w", capabilities=["fetch"])

    @agent.handler("work")
    async def work(task: Task, ctx: TaskContext) -> str:
        return "ok"

    return agent


def completed(n: int) -> object:
    return lambda ledger: ledger.totals.completed >= n


async def test_a_restarted_projection_goes_on_from_its_position_and_counts_nothing_twice(
    board: TaskBoard,
) -> None:
    agent = worker(board)
    await run_tasks(board, agent, "a", 4)
    async with projecting(board):
        await until_ledger(board, agent.id, lambda ledger: ledger.totals.completed == 4)
        # (the first batch's position is written at once)
        first = await until_position(board, "ledger", 1)
    await run_tasks(board, agent, "b", 3)
    async with projecting(board):
        await until_position(board, "ledger", await last_seq(board, "task.completed.>"))
        entry = await Ledger(board.nc).get(agent.id)
    # Whatever it read again after its position changed nothing: every task counted once.
    assert first <= await last_seq(board, "task.completed.>")
    assert (entry.totals.completed, entry.totals.claimed) == (7, 7)


async def test_replicas_each_follow_the_trail_and_count_each_event_once(board: TaskBoard) -> None:
    agent = worker(board)
    async with projecting(board, "one"), projecting(board, "two"):
        await run_tasks(board, agent, "r", 12)
        end = await last_seq(board, "task.completed.>")
        await asyncio.gather(until_position(board, "one", end), until_position(board, "two", end))
        entry = await Ledger(board.nc).get(agent.id)
    assert (entry.totals.completed, entry.totals.claimed) == (12, 12)
    assert entry.by_capability["fetch"].completed == 12


async def test_a_projection_goes_on_from_the_durable_consumer_an_earlier_version_left(
    board: TaskBoard,
) -> None:
    agent = worker(board)
    await run_tasks(board, agent, "old", 3)
    # An earlier version's ledger counted these through its durable consumer, acknowledging each.
    js = board.nc.jetstream()
    await js.add_consumer(
        TRAIL_STREAM,
        ConsumerConfig(durable_name="ledger", ack_policy=AckPolicy.ALL, filter_subject="ants.trail.>"),
    )
    old = await js.pull_subscribe_bind("ledger", TRAIL_STREAM)
    floor = await last_seq(board, ">")
    messages = await old.fetch(floor, timeout=5)
    await messages[-1].ack_sync()
    await run_tasks(board, agent, "new", 2)
    async with projecting(board):
        entry = await until_ledger(board, agent.id, lambda ledger: ledger.totals.completed >= 2)
        await until_position(board, "ledger", await last_seq(board, "task.completed.>"))
        entry = await Ledger(board.nc).get(agent.id)
    # Only what came after the durable's position: the three before were its to count.
    assert entry.totals.completed == 2


async def test_a_deferred_outcome_whose_claim_was_counted_before_a_restart_counts_the_claim_once(
    board: TaskBoard,
) -> None:
    await board.submit(Task(id="t1", kind="work", requires=("fetch",)))
    lease = await board.claim("t1", "w1")
    assert isinstance(lease, Lease)
    async with projecting(board):
        await until_ledger(board, "w1", lambda ledger: ledger.totals.claimed == 1)
        await until_position(board, "ledger", await last_seq(board, "task.claimed.>"))
    # Its writer could not tell that the claim's event landed: the outcome stands for the claim too.
    lease.announced = False
    await board.complete(lease, "done")
    async with projecting(board):
        entry: AgentLedger = await until_ledger(board, "w1", lambda ledger: ledger.totals.completed == 1)
    assert (entry.totals.claimed, entry.totals.completed) == (1, 1)


async def corrupt_reports(board: TaskBoard) -> list[str]:
    return [event.kind for event in await board.trail.replay("ants.trail.corrupt.>")]


async def test_deferred_questions_and_declines_end_a_counted_claim_without_counting_it_again(
    board: TaskBoard,
) -> None:
    async with projecting(board):
        for how in ("declined", "asked"):
            await board.submit(Task(id=f"t-{how}", kind="work", requires=("fetch",)))
            lease = await board.claim(f"t-{how}", "w1")
            assert isinstance(lease, Lease)
            lease.announced = False  # its writer could not tell that the claim's event landed
            if how == "declined":
                await board.decline(lease, "not mine")
            else:
                await board.ask(lease, "which one?", timeout=60)
        await until_position(board, "ledger", await last_seq(board, "task.asked.>"))
        entry = await Ledger(board.nc).get("w1")
    assert (entry.totals.claimed, entry.totals.declined, entry.totals.asked) == (2, 1, 1)
    assert await corrupt_reports(board) == []


async def test_a_claim_declined_before_the_ledger_reads_its_record_still_counts(board: TaskBoard) -> None:
    async with projecting(board):
        for i in range(3):
            await board.submit(Task(id=f"d{i}", kind="work", requires=("fetch",)))
            lease = await board.claim(f"d{i}", "w1")
            assert isinstance(lease, Lease) and lease.announced
            await board.decline(lease, "not mine")  # (the record has no holder of that claim now)
        await until_position(board, "ledger", await last_seq(board, "task.declined.>"))
        entry = await Ledger(board.nc).get("w1")
    assert (entry.totals.claimed, entry.totals.declined) == (3, 3)
    assert await corrupt_reports(board) == []


async def test_a_position_in_a_trail_made_anew_since_reads_the_new_trail_from_its_start(
    board: TaskBoard,
) -> None:
    ledger = Ledger(board.nc)
    await ledger.ensure()
    agent = worker(board)
    await run_tasks(board, agent, "n", 2)
    # Kept from a trail deleted and made again since, which has grown past it meanwhile.
    kept = f"{await last_seq(board, 'task.completed.>')} 2026-01-01T00:00:00+00:00"
    await Bucket(board.nc.jetstream(), COUNTED_BUCKET).put("position.ledger", kept.encode())
    async with projecting(board):
        entry = await until_ledger(board, agent.id, lambda ledger: ledger.totals.completed == 2)
    assert entry.totals.completed == 2
