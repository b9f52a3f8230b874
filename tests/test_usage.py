"""Usage and budgets: what handlers report (``ctx.usage``) is kept per attempt, summed per task
and per submission, counted per agent and capability by the ledger; a submission's budget, once
spent, fails its tasks not yet started, with the reason, and no agent claims them."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    Budget,
    BudgetNotFound,
    EmbeddedServer,
    InvalidTask,
    Ledger,
    NotTaken,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    Trail,
    Usage,
)
from ants_nats._aio import cancel_and_wait
from ants_nats.board.budget import Budgets

from .helpers import until_ledger
from .test_cli import run_cli


def _spender(agent: Agent, tokens_in: int = 40, tokens_out: int = 10, cost: float = 0.25) -> None:
    @agent.handler("write")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        ctx.usage(tokens_in=tokens_in, tokens_out=tokens_out)
        ctx.usage(cost=cost)  # it adds up
        return task.id


async def test_a_spent_budget_fails_the_tasks_not_yet_started(board: TaskBoard) -> None:
    agent = Agent(board, name="writer")  # one at a time: each task is checked after the last one's charge
    _spender(agent)
    budget = Budget(id="report", tokens=120)
    async with agent:
        records = await board.submit_many(
            [Task(id=f"part{i}", kind="write") for i in range(5)], budget=budget
        )
        assert all(r.task.budget == "report" for r in records)
        final = await board.wait([r.task.id for r in records], timeout=20)
    done = sorted(t for t, r in final.items() if r.status is TaskStatus.DONE)
    failed = sorted(t for t, r in final.items() if r.status is TaskStatus.FAILED)
    # 50 tokens a task: 0, 50 and 100 are under 120, so three start; then it is spent.
    assert done == ["part0", "part1", "part2"] and failed == ["part3", "part4"]
    for task_id in failed:
        assert final[task_id].error == "budget 'report' is spent: 150 of 120 tokens"
        assert final[task_id].attempts == ()  # nobody claimed it
    spent = await board.budget("report")
    assert spent.spent == Usage(tokens_in=120, tokens_out=30, cost=0.75)


async def test_a_budget_is_opened_once_and_checked(board: TaskBoard) -> None:
    budget = Budget(id="b1", cost=2.0)
    await board.submit(Task(id="x", kind="write"), budget=budget)
    await board.submit(Task(id="x", kind="write"), budget=budget)  # the same submission again
    with pytest.raises(InvalidTask, match="exists with other limits"):
        await board.submit(Task(id="y", kind="write"), budget=Budget(id="b1", cost=3.0))
    with pytest.raises(InvalidTask, match="no budget 'nope'"):
        await board.submit(Task(id="z", kind="write", budget="nope"))
    with pytest.raises(BudgetNotFound, match="no budget 'nope'"):  # a NotFound, as a missing task
        await board.budget("nope")
    with pytest.raises(InvalidTask, match="names budget 'b1', not 'b2'"):
        await board.submit(Task(id="w", kind="write", budget="b1"), budget=Budget(id="b2", tokens=5))
    joined = await board.submit(Task(id="later", kind="write", budget="b1"))  # joining it later
    assert joined.task.budget == "b1"
    with pytest.raises(ValueError, match="tokens and/or cost"):
        Budget(id="empty")
    assert [r.task.id for r in await board.all_tasks() if r.task.id in {"y", "z", "w"}] == []


async def test_usage_adds_up_under_a_root_and_in_the_ledger(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    agent = Agent(board, name="writer", capabilities=["pen"], capacity=2)
    _spender(agent, tokens_in=7, tokens_out=3, cost=0.5)
    ledger = Ledger(board.nc)
    async with agent:
        follow = asyncio.create_task(ledger.project(await Trail.open(board.nc), durable="usage-ledger"))
        try:
            await board.submit_many(
                [
                    Task(id="root", kind="write", requires=["pen"]),
                    Task(id="left", kind="write", requires=["pen"], depends_on=["root"]),
                    Task(id="right", kind="write", requires=["pen"], depends_on=["root"]),
                    Task(id="leaf", kind="write", requires=["pen"], depends_on=["left", "right"]),
                    Task(id="apart", kind="write", requires=["pen"]),
                ]
            )
            await board.wait(["root", "left", "right", "leaf", "apart"], timeout=20)
            assert await board.usage("root") == Usage(tokens_in=28, tokens_out=12, cost=2.0)  # 4, not 5
            counted = await until_ledger(board, agent.id, lambda x: x.totals.completed == 5)
        finally:
            await cancel_and_wait([follow])
    assert counted.usage == {"pen": Usage(tokens_in=35, tokens_out=15, cost=2.5)}

    def cli(*args: str) -> tuple[int, str]:
        done = run_cli("usage", *args, "--json", "--server", nats_server.url)
        return done.returncode, done.stdout

    code, out = await asyncio.to_thread(cli, "--agent", agent.id)
    assert code == 0 and json.loads(out) == [
        {"who": agent.id, "capability": "pen", "tokens_in": 35, "tokens_out": 15, "cost": 2.5}
    ]
    code, out = await asyncio.to_thread(cli, "--task", "root")
    assert code == 0 and json.loads(out)[0]["tokens_in"] == 28


async def test_an_ending_retried_after_a_lost_answer_is_charged_once(board: TaskBoard) -> None:
    await board.submit(Task(id="once", kind="write"), budget=Budget(id="b-once", tokens=1000))
    lease = await board.claim("once", "writer")
    assert not isinstance(lease, NotTaken)
    spent = Usage(tokens_in=40, tokens_out=10)
    await board.complete(lease, "ok", usage=spent)
    # The same ending charged again, as a retry whose first answer was lost would (the charge
    # is keyed by the attempt: task, token, outcome).
    budgets = Budgets(board.nc.jetstream(), replicas=1)
    await budgets.charge("b-once", spent, f"once.{lease.token}.completed")
    assert (await board.budget("b-once")).spent == spent
    await budgets.charge("b-once", spent, "once.999.completed")  # another attempt is charged
    assert (await board.budget("b-once")).spent == spent + spent


async def test_garbage_under_a_budgets_key_is_replaced_when_it_is_opened(board: TaskBoard) -> None:
    await board.nc.jetstream().publish("$KV.ants_budgets.b-bad", b"not a budget")
    budget = Budget(id="b-bad", tokens=5)
    await asyncio.wait_for(board.submit(Task(id="fresh", kind="write"), budget=budget), 10)
    assert (await board.budget("b-bad")).tokens == 5
    with pytest.raises(ValueError, match="finite"):
        Budget(id="b-inf", cost=float("inf"))
