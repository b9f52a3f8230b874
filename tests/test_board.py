"""Claim-and-lock on a real server: atomic claims, fencing tokens, leases, DAGs, bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ants_nats import (
    DependencyCycle,
    EmbeddedServer,
    InvalidTask,
    Lease,
    LeaseLost,
    NotTaken,
    PayloadTooLarge,
    Task,
    TaskBoard,
    TaskExists,
    TaskNotFound,
    TaskStatus,
    UnknownDependency,
)
from ants_nats.names import lease_key

from .conftest import fresh_board


async def claim_ok(board: TaskBoard, task_id: str, agent: str) -> Lease:
    outcome = await board.claim(task_id, agent)
    assert isinstance(outcome, Lease), outcome
    return outcome


async def test_exactly_one_of_many_racing_claims_wins(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work"))
    outcomes = await asyncio.gather(*(board.claim("t1", f"agent-{i}") for i in range(20)))
    winners = [o for o in outcomes if isinstance(o, Lease)]
    losers = [o for o in outcomes if isinstance(o, NotTaken)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert {loser.reason for loser in losers} == {"held"}
    assert all(loser.holder == winners[0].agent_id for loser in losers if loser.holder)
    record = await board.get("t1")
    assert record.status is TaskStatus.CLAIMED
    assert record.holder == winners[0].agent_id
    assert record.token == winners[0].token


async def test_complete_with_current_token_then_stale_token_is_rejected(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work", payload={"n": 1}))
    lease = await claim_ok(board, "t1", "a")
    done = await board.complete(lease, {"answer": 42})
    assert done.status is TaskStatus.DONE
    assert done.result == {"answer": 42}
    with pytest.raises(LeaseLost):
        await board.complete(lease, {"answer": 0})
    assert (await board.get("t1")).result == {"answer": 42}
    assert await board.claim("t1", "b") == NotTaken("t1", "finished", status=TaskStatus.DONE)


async def test_expired_lease_returns_task_and_zombie_is_fenced_off(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work"))
    zombie = await claim_ok(board, "t1", "zombie")
    kv = await board.nc.jetstream().key_value("ants_leases")
    watcher = await kv.watch(lease_key("t1", "zombie"))
    async for entry in watcher:  # the server's expiry marker is the event we wait for
        if entry is not None and entry.operation is not None:
            break
    await watcher.stop()
    fresh = await claim_ok(board, "t1", "fresh")
    assert fresh.token > zombie.token
    for late in (board.complete(zombie, "late"), board.heartbeat(zombie), board.release(zombie)):
        with pytest.raises(LeaseLost):
            await late
    record = await board.get("t1")
    assert record.holder == "fresh"
    assert [(a.agent, a.outcome) for a in record.attempts] == [("zombie", "expired")]
    await board.complete(fresh, "ok")
    assert (await board.get("t1")).result == "ok"


async def test_heartbeat_keeps_lease_alive_past_ttl(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work"))
    lease = await claim_ok(board, "t1", "a")
    ttl = board.config.lease_ttl
    loop = asyncio.get_running_loop()
    end = loop.time() + 3 * ttl
    while loop.time() < end:
        await asyncio.sleep(ttl / 3)
        await board.heartbeat(lease)
        rival = await board.claim("t1", "b")
        assert isinstance(rival, NotTaken) and rival.reason == "held"
    assert (await board.complete(lease, 1)).status is TaskStatus.DONE


async def test_release_does_not_count_and_failures_dead_letter(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work", max_attempts=2))
    lease = await claim_ok(board, "t1", "a")
    assert (await board.release(lease)).status is TaskStatus.PENDING
    lease = await claim_ok(board, "t1", "a")
    assert (await board.fail(lease, "boom")).status is TaskStatus.PENDING
    lease = await claim_ok(board, "t1", "b")
    record = await board.fail(lease, "boom again")
    assert record.status is TaskStatus.DEAD
    assert [a.outcome for a in record.attempts] == ["released", "failed", "failed"]
    assert record.counted_attempts == 2


async def test_fail_without_retry_fails_and_blocks_dependents(board: TaskBoard) -> None:
    await board.submit_many(
        [
            Task(id="a", kind="work"),
            Task(id="b", kind="work", depends_on=("a",)),
            Task(id="c", kind="work", depends_on=("b",)),
        ]
    )
    lease = await claim_ok(board, "a", "x")
    await board.fail(lease, "bad input", retry=False)
    b, c = await board.get("b"), await board.get("c")
    assert b.status is TaskStatus.FAILED and c.status is TaskStatus.FAILED
    assert b.error is not None and "dependency 'a' is failed" in b.error
    assert c.error is not None and "dependency 'b' is failed" in c.error
    late = await board.submit(Task(id="d", kind="work", depends_on=("a",)))
    assert late.status is TaskStatus.FAILED


async def test_expired_attempts_dead_letter_with_history(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work", max_attempts=1))
    first = await claim_ok(board, "t1", "a")
    lease_kv = await board.nc.jetstream().key_value("ants_leases")
    watcher = await lease_kv.watch(lease_key("t1", "a"))
    async for entry in watcher:
        if entry is not None and entry.operation is not None:
            break
    await watcher.stop()
    outcome = await board.claim("t1", "b")
    assert outcome == NotTaken("t1", "finished", status=TaskStatus.DEAD)
    record = await board.get("t1")
    assert record.status is TaskStatus.DEAD
    assert [(a.agent, a.token, a.outcome) for a in record.attempts] == [("a", first.token, "expired")]
    assert await board.leases.get(lease_key("t1", "a")) is None


async def test_dependencies_gate_claims_and_results_flow(board: TaskBoard) -> None:
    await board.submit_many(
        [
            Task(id="fetch", kind="fetch"),
            Task(id="parse", kind="parse", depends_on=("fetch",)),
            Task(id="sum", kind="sum", depends_on=("parse", "fetch")),
        ]
    )
    assert await board.claim("parse", "a") == NotTaken("parse", "not_ready")
    lease = await claim_ok(board, "fetch", "a")
    await board.complete(lease, "page")
    assert (await board.get("sum")).waiting_on == ("parse",)
    lease = await claim_ok(board, "parse", "a")
    await board.complete(lease, "tree")
    assert (await board.get("sum")).ready


async def test_submitting_against_a_done_dependency_is_ready_at_once(board: TaskBoard) -> None:
    await board.submit(Task(id="a", kind="work"))
    await board.complete(await claim_ok(board, "a", "x"), 1)
    record = await board.submit(Task(id="b", kind="work", depends_on=("a",)))
    assert record.ready


@pytest.mark.parametrize(
    ("tasks", "error"),
    [
        ([{"id": "bad id!", "kind": "work"}], InvalidTask),
        ([{"id": "t", "kind": "work", "surprise": 1}], InvalidTask),
        ([{"id": "t"}], InvalidTask),
        ([{"id": "t", "kind": "work", "requires": ["Not A Cap"]}], InvalidTask),
        ([{"id": "t", "kind": "work", "max_attempts": 0}], InvalidTask),
        ([{"id": "t", "kind": "work", "payload": float("nan")}], InvalidTask),
        ([{"id": "t", "kind": "work", "depends_on": ["ghost"]}], UnknownDependency),
        ([{"id": "t", "kind": "work", "depends_on": ["t"]}], DependencyCycle),
        (
            [
                {"id": "a", "kind": "work", "depends_on": ["c"]},
                {"id": "b", "kind": "work", "depends_on": ["a"]},
                {"id": "c", "kind": "work", "depends_on": ["b"]},
            ],
            DependencyCycle,
        ),
        ([{"id": "t", "kind": "work"}, {"id": "t", "kind": "work"}], InvalidTask),
    ],
)
async def test_bad_input_raises_precisely_and_writes_nothing(
    board: TaskBoard, tasks: list[dict[str, object]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await board.submit_many([{"id": "ok", "kind": "work"}, *tasks])
    assert await board.all_tasks() == []


async def test_existing_id_is_rejected_and_original_kept(board: TaskBoard) -> None:
    await board.submit(Task(id="t", kind="work", payload=1))
    with pytest.raises(TaskExists):
        await board.submit(Task(id="t", kind="work", payload=2))
    assert (await board.get("t")).task.payload == 1


async def test_payload_limit_is_named_in_the_error(nats_server: EmbeddedServer) -> None:
    async with fresh_board(nats_server.url, inline_bytes=1000, max_payload_bytes=50_000) as board:
        with pytest.raises(PayloadTooLarge, match=r"limit is 50000 bytes"):
            await board.submit({"id": "t", "kind": "work", "payload": "x" * 70_000})
        assert await board.all_tasks() == []
        await board.submit(Task(id="t", kind="work"))
        lease = await claim_ok(board, "t", "a")
        with pytest.raises(PayloadTooLarge):
            await board.complete(lease, "y" * 70_000)
        assert (await board.get("t")).status is TaskStatus.CLAIMED


async def test_invalid_and_unknown_ids(board: TaskBoard) -> None:
    with pytest.raises(InvalidTask):
        await board.get("no/such")
    with pytest.raises(TaskNotFound):
        await board.get("missing")
    assert await board.claim("missing", "a") == NotTaken("missing", "unknown")


async def test_deadline_passed_fails_the_task_and_its_dependents(board: TaskBoard) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await board.submit_many(
        [Task(id="late", kind="work", deadline=past), Task(id="next", kind="work", depends_on=("late",))]
    )
    assert await board.claim("late", "a") == NotTaken("late", "finished", status=TaskStatus.FAILED)
    assert (await board.get("late")).error == "deadline passed before a claim"
    assert (await board.get("next")).status is TaskStatus.FAILED


async def test_snapshot_right_after_each_write_sees_every_task(board: TaskBoard) -> None:
    # A snapshot that trusted nats-py's "caught up" marker could end before values already pushed.
    for i in range(25):
        await board.submit(Task(id=f"snap{i}", kind="work"))
        assert len(await board.all_tasks()) == i + 1


def test_a_task_built_wrong_in_code_is_invalid_task_naming_each_problem() -> None:
    # As a task submitted as JSON: the one hierarchy, every problem named, the field first.
    with pytest.raises(InvalidTask, match=r"invalid task: id: .*; kind: "):
        Task(id="bad id", kind="Bad Kind")
    with pytest.raises(InvalidTask, match="payload: input was not a valid JSON value"):
        Task(id="p", kind="k", payload={1, 2})  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match="task: Input should be a valid dictionary"):
        Task.model_validate([1])
    with pytest.raises(InvalidTask, match="route name of"):  # (a rule on the whole task too)
        Task(id="greedy", kind="k", requires=tuple(f"capability-{i:03d}" for i in range(40)))
