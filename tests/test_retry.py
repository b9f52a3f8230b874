"""Retries: exponential backoff with jitter held by the server (no agent waits), handlers that
say a retry cannot help, and a per-task handler timeout."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    InvalidTask,
    Lease,
    NonRetryable,
    RetryPolicy,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
)


def test_the_delay_grows_by_its_factor_up_to_its_cap_less_its_jitter() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, cap=5.0, jitter=0.5)
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(3, rand=lambda: 0.5) == 3.0  # a quarter off: 4 * (1 - 0.5 * 0.5)
    assert all(2.0 <= policy.delay(3) <= 4.0 for _ in range(100))
    assert RetryPolicy(jitter=0.0).delay(1) == RetryPolicy().base


async def test_a_failed_task_comes_back_after_its_backoff(board: TaskBoard) -> None:
    runs: list[str] = []

    async def flaky(task: Task, ctx: TaskContext) -> JsonValue:
        runs.append(task.id)
        if len(runs) < 3:
            raise RuntimeError(f"failure {len(runs)}")
        return "third time lucky"

    agent = Agent(board, name="persevering")
    agent.handler("work")(flaky)
    policy = RetryPolicy(base=0.3, factor=2.0, jitter=0.0)
    async with agent:
        await board.submit(Task(id="flaky", kind="work", retry=policy))
        final = (await board.wait(["flaky"], timeout=20))["flaky"]
    assert final.status is TaskStatus.DONE and final.result == "third time lucky"
    first, second, third = final.attempts
    assert [a.outcome for a in final.attempts] == ["failed", "failed", "completed"]
    # The server held the ticket back: never sooner than the policy says.
    assert (second.started_at - first.ended_at).total_seconds() >= 0.3
    assert (third.started_at - second.ended_at).total_seconds() >= 0.6


async def test_non_retryable_fails_the_task_at_once_and_blocks_its_dependents(board: TaskBoard) -> None:
    async def hopeless(task: Task, ctx: TaskContext) -> JsonValue:
        raise NonRetryable("the input file is not a PDF")

    agent = Agent(board, name="honest")
    agent.handler("work")(hopeless)
    async with agent:
        await board.submit_many(
            [Task(id="parse", kind="work"), Task(id="summarise", kind="work", depends_on=["parse"])]
        )
        final = await board.wait(["parse", "summarise"], timeout=20)
    parse = final["parse"]
    assert parse.status is TaskStatus.FAILED
    assert parse.error == "NonRetryable: the input file is not a PDF"
    assert [a.outcome for a in parse.attempts] == ["failed"]
    assert final["summarise"].status is TaskStatus.FAILED
    assert final["summarise"].error is not None and "blocked" in final["summarise"].error


async def test_a_task_timeout_fails_an_attempt_that_runs_too_long(board: TaskBoard) -> None:
    async def stuck(task: Task, ctx: TaskContext) -> JsonValue:
        await asyncio.Event().wait()
        return None

    agent = Agent(board, name="patient")  # no timeout of its own: the task's applies
    agent.handler("work")(stuck)
    async with agent:
        await board.submit(Task(id="stuck", kind="work", timeout=0.3, max_attempts=1))
        final = (await board.wait(["stuck"], timeout=20))["stuck"]
    assert final.status is TaskStatus.DEAD
    assert final.attempts[0].error == "TimeoutError: handler exceeded 0.3s"


async def test_retry_puts_a_failed_task_back_and_unblocks_its_dependents(board: TaskBoard) -> None:
    broken = True

    async def sometimes(task: Task, ctx: TaskContext) -> JsonValue:
        if broken and task.id == "root":
            raise NonRetryable("a bad day")
        return task.id

    agent = Agent(board, name="fixed-later")
    agent.handler("work")(sometimes)
    async with agent:
        await board.submit_many(
            [
                Task(id="root", kind="work"),
                Task(id="child", kind="work", depends_on=["root"]),
                Task(id="grandchild", kind="work", depends_on=["child"]),
            ]
        )
        failed = await board.wait(["root", "child", "grandchild"], timeout=20)
        assert {r.status for r in failed.values()} == {TaskStatus.FAILED}
        broken = False
        retried = await board.retry("root")
        assert retried.status is TaskStatus.PENDING and retried.counted_attempts == 0
        final = await board.wait(["root", "child", "grandchild"], timeout=20)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert [a.outcome for a in final["root"].attempts] == ["failed", "completed"]  # history kept
    kinds = [e.kind for e in await board.trail.history("child")]
    assert "task.unblocked" in kinds


async def test_retry_gives_a_dead_task_a_fresh_budget_and_refuses_others(board: TaskBoard) -> None:
    await board.submit(Task(id="doomed", kind="work", max_attempts=1))
    lease = await board.claim("doomed", "worker")
    assert isinstance(lease, Lease)
    assert (await board.fail(lease, "boom")).status is TaskStatus.DEAD
    again = await board.retry("doomed")
    assert again.counted_attempts == 0 and len(again.attempts) == 1
    second = await board.claim("doomed", "worker")
    assert isinstance(second, Lease)  # one more attempt is allowed
    await board.complete(second, "ok")
    with pytest.raises(InvalidTask, match="is done: only a failed or dead task can be retried"):
        await board.retry("doomed")
    await board.submit(Task(id="fresh", kind="work"))
    with pytest.raises(InvalidTask, match="is pending"):
        await board.retry("fresh")


async def _fail_for_good(board: TaskBoard, task_id: str, *, dead: bool) -> None:
    """End ``task_id`` for good: dead after its only attempt, or failed without retry (what
    ``NonRetryable`` does)."""
    lease = await board.claim(task_id, "worker")
    assert isinstance(lease, Lease)
    final = await board.fail(lease, "boom", retry=dead)
    assert final.status is (TaskStatus.DEAD if dead else TaskStatus.FAILED)


async def _finish(board: TaskBoard, task_id: str) -> TaskRecord:
    lease = await board.claim(task_id, "worker")
    assert isinstance(lease, Lease)
    return await board.complete(lease, task_id)


@pytest.mark.parametrize("dead", [True, False], ids=["dead", "failed"])
async def test_retry_puts_back_a_dependent_submitted_after_the_task_ended(
    board: TaskBoard, dead: bool
) -> None:
    await board.submit_many(
        [Task(id="g1", kind="work", max_attempts=1), Task(id="early", kind="work", depends_on=["g1"])]
    )
    await _fail_for_good(board, "g1", dead=dead)
    late = await board.submit(Task(id="late", kind="work", depends_on=["g1"]))
    status = "dead" if dead else "failed"
    assert late.status is TaskStatus.FAILED and late.error == f"blocked: dependency 'g1' is {status} (boom)"
    ended = await board.get("g1")
    assert ended.dependents == ("early", "late")  # the late one is linked like the early one
    assert ended.finished_dependents == ("early", "late")  # so the record may still expire

    await board.retry("g1")
    for task_id in ("early", "late"):
        record = await board.get(task_id)
        assert record.status is TaskStatus.PENDING and record.error is None
        assert record.waiting_on == ("g1",)
        assert "task.unblocked" in [e.kind for e in await board.trail.history(task_id)]
    # Unfinished again: the record stays while they may still read its result.
    assert (await board.get("g1")).finished_dependents == ()
    await _finish(board, "g1")
    assert (await _finish(board, "late")).status is TaskStatus.DONE
    assert (await board.get("g1")).finished_dependents == ("late",)


async def test_retry_reaches_the_dependents_of_a_late_dependent(board: TaskBoard) -> None:
    await board.submit(Task(id="g1", kind="work"))
    await _fail_for_good(board, "g1", dead=False)
    submitted = await board.submit_many(
        [
            Task(id="late", kind="work", depends_on=["g1"]),
            Task(id="child", kind="work", depends_on=["late"]),
        ]
    )
    # Submitted after its own dependency was blocked: a late dependent of a late dependent.
    submitted.append(await board.submit(Task(id="grandchild", kind="work", depends_on=["child"])))
    assert all(r.status is TaskStatus.FAILED for r in submitted)
    assert (submitted[2].error or "").startswith("blocked: dependency 'child' is failed")

    await board.retry("g1")
    chain = ("late", "child", "grandchild")
    for task_id, dep in zip(chain, ("g1", "late", "child"), strict=True):
        record = await board.get(task_id)
        assert record.status is TaskStatus.PENDING and record.waiting_on == (dep,)
    for task_id in ("g1", *chain):
        assert (await _finish(board, task_id)).status is TaskStatus.DONE


async def test_a_block_on_a_stale_view_of_a_retried_dependency_is_undone(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await board.submit(Task(id="g1", kind="work", max_attempts=1))
    await _fail_for_good(board, "g1", dead=True)
    propagation = board._propagation
    block = propagation.block

    async def retried_meanwhile(
        task_id: str, dep: str, dep_record: TaskRecord, *, by: str | None = None
    ) -> None:
        # The retry lands after the late dependent is linked, before it is blocked: the retry finds
        # it still pending, and the block that follows acts on the record read before the retry.
        if task_id == "late" and dep_record.status is TaskStatus.DEAD:
            await board.retry("g1")
        await block(task_id, dep, dep_record, by=by)

    monkeypatch.setattr(propagation, "block", retried_meanwhile)
    await board.submit(Task(id="late", kind="work", depends_on=["g1"]))
    late = await board.get("late")
    assert late.status is TaskStatus.PENDING and late.waiting_on == ("g1",)
    await _finish(board, "g1")
    assert (await _finish(board, "late")).status is TaskStatus.DONE
