"""Asking a human: ``ctx.ask`` parks a task as ``waiting_input`` (not an attempt), an answer makes it
claimable again and the next claimer's ``ask`` returns it, even when the asker has died; a
question left unanswered fails its task with the reason."""

from __future__ import annotations

import asyncio
import re

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    NotTaken,
    NotWaiting,
    Task,
    TaskBoard,
    TaskContext,
    TaskFinished,
    TaskStatus,
)

from .helpers import until_event, until_tasks
from .test_cli import run_cli


def _asker(asked: list[str]) -> object:
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        asked.append(ctx.lease.agent_id)
        ctx.usage(tokens_in=10, tokens_out=5)
        region = await ctx.ask("Which region?", timeout=60)
        return {"region": region, "answers": list(ctx.answers)}

    return handle


async def test_an_answer_after_the_asker_died_reaches_the_next_claimer(board: TaskBoard) -> None:
    asked: list[str] = []
    first = Agent(board, name="asker", shutdown_grace=0)
    first.handler("plan")(_asker(asked))  # type: ignore[arg-type]
    async with first:
        await board.submit(Task(id="trip", kind="plan"))
        parked = await until_tasks(
            board, lambda r: r.get("trip", None) is not None and r["trip"].status is TaskStatus.WAITING_INPUT
        )
    record = parked["trip"]
    # The asker is gone. The question is in the record and on the trail; the claim was not an attempt.
    assert [q.text for q in record.questions] == ["Which region?"]
    assert record.holder is None and record.counted_attempts == 0
    assert [a.outcome for a in record.attempts] == ["asked"]
    assert record.usage.tokens == 15
    event = await until_event(board, "task.asked", "trip")
    assert isinstance(event.data, dict) and event.data["question"] == "Which region?"
    # Nobody can claim it while it waits; the refusal says until when it may wait.
    refused = await board.claim("trip", "rival")
    assert isinstance(refused, NotTaken) and refused.reason == "waiting"
    assert refused.retry_after is not None and 50 < refused.retry_after <= 60

    second = Agent(board, name="answerer-side")
    second.handler("plan")(_asker(asked))  # type: ignore[arg-type]
    async with second:
        await board.answer("trip", "eu-west", by="alice")
        result = await board.result("trip", timeout=10)
    assert result == {"region": "eu-west", "answers": ["eu-west"]}
    assert asked == [first.id, second.id]
    done = await board.get("trip")
    assert done.questions[0].answer == "eu-west" and done.questions[0].answered_by == "alice"
    assert [a.outcome for a in done.attempts] == ["asked", "completed"]
    assert done.usage.tokens == 30  # both runs reported 15
    with pytest.raises(TaskFinished):
        await board.answer("trip", "too late")


async def test_an_unanswered_question_fails_the_task_with_the_reason(board: TaskBoard) -> None:
    agent = Agent(board, name="impatient")

    @agent.handler("plan")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        return await ctx.ask("Anyone there?", timeout=0.5)

    async with agent:
        await board.submit(Task(id="lonely", kind="plan"))
        final = (await board.wait(["lonely"], timeout=10))["lonely"]
    assert final.status is TaskStatus.FAILED
    assert final.error is not None and final.error.startswith("no answer to 'Anyone there?' by ")
    with pytest.raises(TaskFinished):
        await board.answer("lonely", "yes")


async def test_answering_a_task_that_waits_for_nothing_is_refused(board: TaskBoard) -> None:
    await board.submit(Task(id="busy", kind="plan"))
    with pytest.raises(NotWaiting, match="pending, not waiting for input"):
        await board.answer("busy", "hello")
    assert (await board.get("busy")).status is TaskStatus.PENDING


async def test_a_handler_that_swallows_exceptions_still_parks(board: TaskBoard) -> None:
    agent = Agent(board, name="careless")

    @agent.handler("plan")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        try:
            return await ctx.ask("Sure?")
        except Exception:  # the point: a broad except must not eat the question
            return "swallowed"

    async with agent:
        await board.submit(Task(id="careful", kind="plan"))
        await until_event(board, "task.asked", "careful")
    assert (await board.get("careful")).status is TaskStatus.WAITING_INPUT


async def test_the_cli_answers(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    agent = Agent(board, name="asker")
    agent.handler("plan")(_asker([]))  # type: ignore[arg-type]
    async with agent:
        await board.submit(Task(id="cli-trip", kind="plan"))
        await until_event(board, "task.asked", "cli-trip")
        answered = await asyncio.to_thread(
            run_cli, "answer", "cli-trip", "us-east", "--server", nats_server.url
        )
        assert answered.returncode == 0 and "cli-trip" in answered.stdout
        assert await board.result("cli-trip", timeout=10) == {"region": "us-east", "answers": ["us-east"]}
    again = await asyncio.to_thread(run_cli, "answer", "cli-trip", "again", "--server", nats_server.url)
    assert again.returncode != 0 and "already done" in again.stderr and "Traceback" not in again.stderr


async def test_a_question_asked_inside_a_task_group_still_parks(board: TaskBoard) -> None:
    agent = Agent(board, name="grouped")

    @agent.handler("plan")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        async with asyncio.TaskGroup() as group:  # the question arrives wrapped in a group
            asked = group.create_task(ctx.ask("Which region?"))
        return asked.result()

    async with agent:
        await board.submit(Task(id="grouped", kind="plan"))
        await until_event(board, "task.asked", "grouped")
        await board.answer("grouped", "eu-west")
        assert await board.result("grouped", timeout=10) == "eu-west"
    assert [a.outcome for a in (await board.get("grouped")).attempts] == ["asked", "completed"]


async def test_an_answer_meant_for_an_earlier_question_is_refused(board: TaskBoard) -> None:
    agent = Agent(board, name="curious")

    @agent.handler("plan")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        return [await ctx.ask("Where?"), await ctx.ask("When?")]

    async with agent:
        await board.submit(Task(id="two", kind="plan"))
        await until_event(board, "task.asked", "two")
        await board.answer("two", "Lisbon", question=0)
        # The rerun asks the second question.
        await until_tasks(board, lambda records: "two" in records and len(records["two"].questions) == 2)
        refused = re.escape("waits for an answer to question 1 ('When?'), not question 0")
        with pytest.raises(NotWaiting, match=refused):
            await board.answer("two", "Lisbon, again", question=0)  # late, or sent twice
        await board.answer("two", "in May", question=1)
        assert await board.result("two", timeout=10) == ["Lisbon", "in May"]
