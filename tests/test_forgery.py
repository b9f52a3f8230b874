"""A signed board under the generated access control: a credentialed agent that rewrites, deletes
or cancels another's task, with plain nats-py and its own seed, is undone by the next reader, and
the trail and the ledger name it.

The module's server (``secured``) is shared by its tests; the first board opened on it is signed,
and each test uses its own task ids. Setting a limit, the fourth attack, is refused by the
server's permissions: ``test_access.test_only_an_operator_sets_limits_and_schedules``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import nats.js.errors
import pytest
from nats.aio.client import Client
from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    Budget,
    CorruptEntry,
    EmbeddedServer,
    NotYours,
    Task,
    TaskBoard,
    TaskContext,
    TaskNotFound,
    TaskStatus,
    Trail,
    Usage,
    Verifier,
    connect,
)
from ants_nats._store import Bucket, Conflict
from ants_nats.board.chain import sign_revision
from ants_nats.board.seal import SIGNED_HISTORY
from ants_nats.cards import Directory
from ants_nats.ledger import Ledger
from ants_nats.models import Attempt, RateWindow, TaskRecord, TrailEvent, utcnow, wire_bytes
from ants_nats.names import BUDGETS_BUCKET, FORGED_RECORD, RATES_BUCKET, TASKS_BUCKET, trail_filter

from .conftest import AGENT as FORGER
from .conftest import LEDGER, OPERATOR, RIVAL, TEST_CARD_TTL, TEST_LEASE_TTL
from .helpers import until_event, until_ledger
from .test_cli import run_cli

OWNER = RIVAL
"""``ant-b``: submits the tasks and, as an agent, works them honestly."""
SIGNED = BoardConfig(signed=True, lease_ttl=TEST_LEASE_TTL, card_ttl=TEST_CARD_TTL)


@asynccontextmanager
async def owner_board(server: EmbeddedServer) -> AsyncIterator[TaskBoard]:
    async with TaskBoard.connect(server.url, SIGNED, seed=OWNER.seed) as board:
        board.sign_as("ant-b", OWNER)
        yield board


@asynccontextmanager
async def forger(server: EmbeddedServer) -> AsyncIterator[tuple[Client, Bucket]]:
    """``ant-a``, a credentialed agent of the swarm (serving ``spam``), and its own connection,
    writing the tasks bucket as plain nats-py would."""
    async with (
        TaskBoard.connect(server.url, SIGNED, seed=FORGER.seed) as board,
        connect(server.url, seed=FORGER.seed) as nc,
    ):
        agent = Agent(board, name="forger", agent_id="ant-a", identity=FORGER)

        @agent.handler("spam")
        async def spam(task: Task, ctx: TaskContext) -> JsonValue:
            return None

        async with agent:
            yield nc, Bucket(nc.jetstream(), TASKS_BUCKET)


def signed(bucket: Bucket, task_id: str, value: bytes, prev: int) -> dict[str, str]:
    """The forger's own, valid signature of ``value`` written over revision ``prev``."""
    return sign_revision(FORGER, bucket.subject(task_id), prev, value)


async def rewrite(bucket: Bucket, task_id: str, **update: object) -> int:
    """Rewrite ``task_id`` with ``update``, a CAS on its current revision, signed by the forger;
    ``token`` set to that revision, as a claim of it would."""
    while True:
        entry = await bucket.get(task_id)
        assert entry is not None
        record = TaskRecord.model_validate_json(entry.value).model_copy(update=update)
        if "attempts" in update:
            record = record.model_copy(update=pwned(entry.revision))
        value = wire_bytes(record)
        with contextlib.suppress(Conflict):  # an agent wrote meanwhile (a decline, say)
            return await bucket.update(
                task_id, value, last=entry.revision, headers=signed(bucket, task_id, value, entry.revision)
            )


async def flood(nc: Client, bucket: Bucket, key: str) -> None:
    """Write ``key`` unconditionally as many times as its bucket keeps revisions of a key."""
    kept = (await nc.jetstream().stream_info(bucket.stream)).config.max_msgs_per_subject
    assert kept is not None and kept > 1
    for _ in range(kept):
        await bucket.put(key, b"{}")


def pwned(token: int) -> dict[str, object]:
    """A finished outcome by ant-a that it never claimed."""
    now = utcnow()
    attempt = Attempt(
        agent="ant-a",
        token=token,
        started_at=now,
        ended_at=now,
        outcome="completed",
        key=FORGER.public_key,
    )
    return {"status": TaskStatus.DONE, "result": "PWNED", "attempts": (attempt,), "token": token}


@asynccontextmanager
async def ledger_projecting(server: EmbeddedServer, *, verified: bool = False) -> AsyncIterator[Ledger]:
    """The ledger service's projection (``verified``: with signature checks), running on its own
    connection until the block ends."""
    async with connect(server.url, seed=LEDGER.seed) as nc:
        ledger = Ledger(nc)
        verifier = Verifier(Directory(nc)) if verified else None
        projector = asyncio.create_task(ledger.project(Trail(nc), verifier=verifier))
        try:
            yield ledger
        finally:
            projector.cancel()
            await asyncio.gather(projector, return_exceptions=True)


@asynccontextmanager
async def spender(server: EmbeddedServer) -> AsyncIterator[Agent]:
    """``ant-b`` working ``spend`` tasks, each reporting 5 tokens spent."""
    async with TaskBoard.connect(server.url, SIGNED, seed=OWNER.seed) as board:
        agent = Agent(board, name="spender", agent_id="ant-b", identity=OWNER)

        @agent.handler("spend")
        async def spend(task: Task, ctx: TaskContext) -> JsonValue:
            ctx.usage(tokens_in=5)
            return "spent"

        async with agent:
            yield agent


@asynccontextmanager
async def honest_agent(server: EmbeddedServer, *kinds: str) -> AsyncIterator[Agent]:
    """``ant-b`` working ``kinds``: each result names its task and its inputs."""
    async with TaskBoard.connect(server.url, SIGNED, seed=OWNER.seed) as board:
        agent = Agent(board, name="honest", agent_id="ant-b", identity=OWNER)
        for kind in kinds:

            @agent.handler(kind)
            async def handle(task: Task, ctx: TaskContext) -> JsonValue:
                return {"by": "ant-b", "task": task.id, "inputs": await ctx.dependency_results()}

        async with agent:
            yield agent


async def test_a_forged_outcome_is_undone_and_the_honest_result_flows_on(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (_, tasks):
        await owner.submit_many(
            [
                Task(id="p1", kind="echo", created_by="ant-b"),
                Task(id="c1", kind="echo", depends_on=("p1",), created_by="ant-b"),
            ]
        )
        forged = await rewrite(tasks, "p1", **pwned(0))

        record = await owner.get("p1")  # the owner reads the true state: pending, no result
        assert (record.status, record.result, record.attempts) == (TaskStatus.PENDING, None, ())
        event = await until_event(owner, FORGED_RECORD, "p1")
        assert event.agent == "ant-a"
        assert isinstance(event.data, dict) and event.data["revision"] == forged

        async with honest_agent(secured, "echo"):
            assert await owner.result("c1", timeout=20) == {
                "by": "ant-b",
                "task": "c1",
                "inputs": {"p1": {"by": "ant-b", "task": "p1", "inputs": {}}},
            }
        assert await owner.result("p1") != "PWNED"


async def test_a_deleted_task_comes_back_and_runs(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (_, tasks):
        await owner.submit_many(
            [
                Task(id="p2", kind="echo", created_by="ant-b"),
                Task(id="c2", kind="echo", depends_on=("p2",), created_by="ant-b"),
            ]
        )
        entry = await tasks.get("c2")
        assert entry is not None
        await tasks.delete("c2", last=entry.revision, headers=signed(tasks, "c2", b"", entry.revision))
        assert await tasks.get("c2") is None  # the server took it: it is the readers who refuse it

        async with honest_agent(secured, "echo"):
            final = await owner.wait(["p2", "c2"], timeout=20)
        assert {r.status for r in final.values()} == {TaskStatus.DONE}
        assert (await until_event(owner, FORGED_RECORD, "c2")).agent == "ant-a"


async def test_a_forged_cancel_is_undone(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (_, tasks):
        await owner.submit(Task(id="q1", kind="slow", created_by="ant-b"))
        await rewrite(tasks, "q1", status=TaskStatus.CANCELLED, error="cancelled by ant-a")
        # Unsigned, it is refused just the same (and names nobody: no key says who wrote it).
        record = await owner.get("q1")
        assert record.status is TaskStatus.PENDING
        async with honest_agent(secured, "slow"):
            assert (await owner.wait(["q1"], timeout=20))["q1"].status is TaskStatus.DONE
        # Only its owner may cancel it.
        await owner.submit(Task(id="q2", kind="later", created_by="ant-b"))
        assert (await owner.cancel("q2", by="ant-b")).status is TaskStatus.CANCELLED
        assert (await owner.get("q2")).status is TaskStatus.CANCELLED


async def test_no_one_erases_a_history_and_one_flooded_is_restored_from_the_trail(
    secured: EmbeddedServer,
) -> None:
    async with owner_board(secured) as owner, forger(secured) as (nc, tasks):
        await owner.submit(Task(id="r1", kind="echo", payload={"n": 1}, created_by="ant-b"))
        entry = await tasks.get("r1")
        assert entry is not None
        record = TaskRecord.model_validate_json(entry.value).model_copy(update=pwned(entry.revision))
        value = wire_bytes(record)
        # A signed board's buckets refuse rollups (purges) and per-message TTLs (a purge that then
        # vanishes, leaving the key empty for a replayed creation).
        with pytest.raises(nats.js.errors.APIError, match="rollup not permitted"):
            await tasks.update(
                "r1",
                value,
                last=entry.revision,
                rollup=True,
                headers=signed(tasks, "r1", value, entry.revision),
            )
        with pytest.raises(nats.js.errors.APIError):
            await nc.jetstream().publish(tasks.subject("r1"), value, headers={"Nats-TTL": "1s"})
        # Flooding it with more plain writes than the bucket keeps leaves no revision to trust:
        # the owner's creation, as the trail carries it, is restored.
        kept = (await nc.jetstream().stream_info(tasks.stream)).config.max_msgs_per_subject
        assert kept is not None and kept >= SIGNED_HISTORY
        for _ in range(kept):
            await tasks.put("r1", value)
        assert await tasks.at(entry.revision) is None  # the creation is no longer kept
        restored = await owner.get("r1")
        assert (restored.status, restored.task.payload, restored.result) == (
            TaskStatus.PENDING,
            {"n": 1},
            None,
        )
        async with honest_agent(secured, "echo"):
            assert (await owner.result("r1", timeout=20))["task"] == "r1"  # type: ignore[index]


async def test_the_ledger_counts_the_forger_and_no_one_it_frames(secured: EmbeddedServer) -> None:
    async with (
        owner_board(secured) as owner,
        forger(secured) as (_, tasks),
        ledger_projecting(secured, verified=True) as ledger,
    ):
        await owner.submit(Task(id="f1", kind="later", created_by="ant-b"))
        await rewrite(tasks, "f1", **pwned(0))
        await owner.get("f1")
        counted = await asyncio.wait_for(until_ledger(owner, "ant-a", lambda e: e.totals.forged >= 1), 20)
        assert counted.totals.completed == 0  # its forged completion counts for nothing
        quarantined = await owner.reputation.quarantined("ant-a", [])
        assert quarantined == ["any"]  # one forgery is enough

        # A forgery report against an honest revision frames nobody: the ledger judges it itself.
        honest = await tasks.get("f1")
        assert honest is not None
        await owner.trail.emit(
            TrailEvent(kind=FORGED_RECORD, ref="f1", agent="ant-b", data={"revision": honest.revision})
        )
        async with aclosing(owner.trail.follow(trail_filter("corrupt.unbacked"))) as rejections:
            async for rejected in rejections:
                data = rejected.data
                if isinstance(data, dict) and (data["kind"], data["task"]) == (FORGED_RECORD, "f1"):
                    assert rejected.data["agent"] == "ant-b"
                    break
        assert (await ledger.get("ant-b")).totals.forged == 0


async def test_a_board_is_signed_from_its_creation_on(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner:
        await owner.submit(Task(id="s1", kind="later", created_by="ant-b"))
        # A task whose submitter this board cannot sign for is refused, with what to do.
        with pytest.raises(Exception, match="the board is signed: tasks created by 'someone'"):
            await owner.submit(Task(id="s2", kind="later", created_by="someone"))
        stored = await Bucket(owner.nc.jetstream(), TASKS_BUCKET).last("s1")
        assert stored is not None and stored.headers is not None
        assert stored.headers["Ants-Signer"] == OWNER.public_key
        proof = await owner.trail.last("task.submitted", "s1")
        assert proof is not None and isinstance(proof.data, dict)
        assert json.loads(wire_bytes(TaskRecord.model_validate(proof.data["record"]))) == proof.data["record"]


async def test_an_honest_board_refuses_to_write_what_readers_would_undo(
    secured: EmbeddedServer, tmp_path: Path
) -> None:
    async with (
        owner_board(secured) as owner,
        TaskBoard.connect(secured.url, SIGNED, seed=FORGER.seed) as rival,
    ):
        rival.sign_as("ant-a", FORGER)
        await owner.submit(Task(id="n1", kind="later", created_by="ant-b"))
        await rival.get("n1")
        with pytest.raises(NotYours, match="belongs to 'ant-b'"):
            await rival.cancel("n1", by="ant-a")
        assert (await owner.get("n1")).status is TaskStatus.PENDING

    # The command line signs as --as with the key of --seed-file; a refusal is one line.
    (tmp_path / "ant-a.seed").write_text(FORGER.seed)
    (tmp_path / "ant-b.seed").write_text(OWNER.seed)

    def as_user(user: str, *command: str) -> subprocess.CompletedProcess[str]:
        seed = str(tmp_path / f"{user}.seed")
        return run_cli(*command, "--server", secured.url, "--seed-file", seed, "--as", user)

    submitted = as_user("ant-b", "submit", "--id", "n2", "--kind", "later", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)[0]["owner_key"] == OWNER.public_key  # submit lists: an array
    refused = as_user("ant-a", "cancel", "n2")
    assert refused.returncode != 0
    assert "belongs to 'ant-b'" in refused.stderr and "Traceback" not in refused.stderr
    cancelled = as_user("ant-b", "cancel", "n2", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"


async def test_a_budgets_limits_are_its_owners_and_spending_it_is_legal(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (nc, _):
        budgets = Bucket(nc.jetstream(), BUDGETS_BUCKET)
        # A budget the forger raises is undone by its next reader, and the forger named.
        await owner.submit(
            Task(id="b1", kind="later", created_by="ant-b"), budget=Budget(id="small", tokens=10)
        )
        entry = await budgets.get("small")
        assert entry is not None
        raised = wire_bytes(Budget.model_validate_json(entry.value).model_copy(update={"tokens": 10**9}))
        await budgets.update(
            "small", raised, last=entry.revision, headers=signed(budgets, "small", raised, entry.revision)
        )
        async with honest_agent(secured, "later"):
            done = (await owner.wait(["b1"], timeout=20))["b1"]
        assert done.status is TaskStatus.DONE
        assert (await owner.budget("small")).tokens == 10
        report = await until_event(owner, FORGED_RECORD, "small")
        assert report.agent == "ant-a" and isinstance(report.data, dict)
        assert report.data["bucket"] == BUDGETS_BUCKET and "limits" in report.data["why"]

        # An honest budget spent by honest work fails the next task legally: no forgery is seen.
        tight = Budget(id="tight", tokens=3)
        await owner.submit(Task(id="b2", kind="spend", created_by="ant-b"), budget=tight)
        async with spender(secured):
            assert await owner.result("b2", timeout=20) == "spent"
            await owner.submit(Task(id="b3", kind="spend", budget="tight", created_by="ant-b"))
            final = (await owner.wait(["b3"], timeout=20))["b3"]
        assert final.status is TaskStatus.FAILED and final.error is not None and "is spent" in final.error
        assert await owner.trail.last(FORGED_RECORD, "b3") is None
        assert await owner.trail.last(FORGED_RECORD, "tight") is None


async def test_what_a_budget_spent_cannot_be_undone(secured: EmbeddedServer) -> None:
    async with (
        owner_board(secured) as owner,
        forger(secured) as (nc, _),
        ledger_projecting(secured) as ledger,
    ):
        budgets = Bucket(nc.jetstream(), BUDGETS_BUCKET)
        async with spender(secured):
            await owner.submit(
                Task(id="sp1", kind="spend", created_by="ant-b"), budget=Budget(id="thin", tokens=3)
            )
            assert await owner.result("sp1", timeout=20) == "spent"
            entry = await budgets.get("thin")
            assert entry is not None
            # The forger lowers what was spent: its next reader undoes it, and the budget's
            # next task fails as spent, legally.
            spent = Budget.model_validate_json(entry.value)
            assert spent.spent.tokens == 5
            lowered = wire_bytes(spent.model_copy(update={"spent": Usage(), "charged": ()}))
            await budgets.update(
                "thin",
                lowered,
                last=entry.revision,
                headers=signed(budgets, "thin", lowered, entry.revision),
            )
            await owner.submit(Task(id="sp2", kind="spend", budget="thin", created_by="ant-b"))
            final = (await owner.wait(["sp2"], timeout=20))["sp2"]
        assert final.status is TaskStatus.FAILED and final.error is not None and "is spent" in final.error
        report = await until_event(owner, FORGED_RECORD, "thin")
        assert report.agent == "ant-a" and isinstance(report.data, dict)
        assert report.data["why"] == "lowers what was spent"
        # The ledger judges the budget's chain itself and counts the forgery against ant-a, once
        # however many readers report it.
        counted = await asyncio.wait_for(until_ledger(owner, "ant-a", lambda e: e.last_seq == report.seq), 20)
        again = TrailEvent(kind=FORGED_RECORD, ref="thin", agent="ant-a", data=report.data)
        await owner.trail.emit(again)
        async with aclosing(owner.trail.follow(trail_filter("corrupt.replayed"))) as rejections:
            async for rejected in rejections:
                if isinstance(rejected.data, dict) and rejected.data["task"] == "thin":
                    break
        assert (await ledger.get("ant-a")).totals.forged == counted.totals.forged

        # Deleting it is undone too; erasing its history (a purge) leaves it spent for good.
        entry = await budgets.get("thin")
        assert entry is not None
        await budgets.delete(
            "thin", last=entry.revision, headers=signed(budgets, "thin", b"", entry.revision)
        )
        assert (await owner.budget("thin")).spent.tokens == 5
        await owner.submit(Task(id="sp3", kind="spend", budget="thin", created_by="ant-b"))
        # Its history cannot be erased (no rollups); flooded with plain writes past what the
        # bucket keeps, it is gone, and the budget counts as spent.
        top = await budgets.last("thin")
        assert top is not None
        with pytest.raises(nats.js.errors.APIError, match="rollup not permitted"):
            await budgets.update("thin", b"{}", last=int(top.seq or 0), rollup=True)
        await flood(nc, budgets, "thin")
        with pytest.raises(CorruptEntry, match="history is gone"):
            await owner.budget("thin")
        with pytest.raises(CorruptEntry, match="history is gone"):
            await owner.submit(Task(id="sp4", kind="spend", budget="thin", created_by="ant-b"))
        async with spender(secured):
            final = (await owner.wait(["sp3"], timeout=20))["sp3"]
        assert (
            final.status is TaskStatus.FAILED and final.error is not None and "history is gone" in final.error
        )


async def test_a_reader_keeps_what_it_knew_a_budget_spent_past_a_flood(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (nc, _):
        budgets = Bucket(nc.jetstream(), BUDGETS_BUCKET)
        async with spender(secured):
            await owner.submit(
                Task(id="dp1", kind="spend", created_by="ant-b"), budget=Budget(id="deep", tokens=3)
            )
            assert await owner.result("dp1", timeout=20) == "spent"
        assert (await owner.budget("deep")).spent.tokens == 5  # this reader has judged it so
        # The forger lowers it, then writes more signed revisions than the bucket keeps: the
        # lowering leaves the history, and the oldest kept revision is taken as it stands...
        kept = (await nc.jetstream().stream_info(budgets.stream)).config.max_msgs_per_subject
        assert kept is not None
        for _ in range(kept + 1):
            entry = await budgets.get("deep")
            assert entry is not None
            lowered = wire_bytes(
                Budget.model_validate_json(entry.value).model_copy(update={"spent": Usage()})
            )
            await budgets.update(
                "deep", lowered, last=entry.revision, headers=signed(budgets, "deep", lowered, entry.revision)
            )
        # ... but not below what a reader knew it had spent.
        assert (await owner.budget("deep")).spent.tokens == 5


async def test_what_a_rate_window_took_cannot_be_undone(secured: EmbeddedServer) -> None:
    async with (
        owner_board(secured) as owner,
        forger(secured) as (nc, _),
        TaskBoard.connect(secured.url, SIGNED, seed=OPERATOR.seed) as operator,
        ledger_projecting(secured),
    ):
        limit = await operator.set_limit("metered", requests=2, per=60)
        windows = Bucket(nc.jetstream(), RATES_BUCKET)
        for _ in range(2):
            wait, _ = await owner.rates.reserve(limit, by="ant-b")
            assert wait == 0.0
        assert await owner.rates.room(limit) > 0  # full: both requests of the interval taken
        # The forger empties the window: its next reader undoes that, and names it.
        entry = await windows.get("metered")
        assert entry is not None
        empty = wire_bytes(RateWindow())
        await windows.update(
            "metered",
            empty,
            last=entry.revision,
            headers=signed(windows, "metered", empty, entry.revision),
        )
        assert await owner.rates.room(limit) > 0
        report = await until_event(owner, FORGED_RECORD, "metered")
        assert report.agent == "ant-a" and isinstance(report.data, dict)
        assert report.data["bucket"] == RATES_BUCKET and "lowers what was taken" in report.data["why"]
        restored = await windows.get("metered")
        assert (
            restored is not None
            and sum(s.requests for s in RateWindow.model_validate_json(restored.value).slots) == 2
        )
        await asyncio.wait_for(until_ledger(owner, "ant-a", lambda e: e.last_seq == report.seq), 20)

        # Its history cannot be erased (no rollups); flooded past what the bucket keeps, the
        # window counts as full for an interval from then.
        with pytest.raises(nats.js.errors.APIError, match="rollup not permitted"):
            await windows.update("metered", empty, last=restored.revision, rollup=True)
        await flood(nc, windows, "metered")
        assert await owner.rates.room(limit) > limit.per / 2


async def test_a_task_created_in_another_owners_name_is_taken_back(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (_, tasks):
        framed = TaskRecord(
            task=Task(id="x1", kind="later", created_by="ant-b"),
            status=TaskStatus.PENDING,
            owner_key=OWNER.public_key,
        )
        value = wire_bytes(framed)
        await tasks.create(
            "x1", value, headers=signed(tasks, "x1", value, 0)
        )  # signed by ant-a, not its owner
        with pytest.raises(TaskNotFound):
            await owner.get("x1")
        assert await tasks.get("x1") is None  # the reader deleted it
        assert (await until_event(owner, FORGED_RECORD, "x1")).agent == "ant-a"


async def test_a_replayed_owner_revision_is_no_owner_action(secured: EmbeddedServer) -> None:
    async with owner_board(secured) as owner, forger(secured) as (_, tasks):
        await owner.submit(Task(id="rp", kind="echo", payload="once", created_by="ant-b"))
        creation = (await tasks.history("rp"))[0]
        stored = await tasks.at(creation.revision)
        assert stored is not None and stored.headers is not None
        async with honest_agent(secured, "echo"):
            assert (await owner.result("rp", timeout=20))["task"] == "rp"  # type: ignore[index]
        # The owner's signed creation, written again over the finished task: it would run again.
        done = await tasks.get("rp")
        assert done is not None
        signature = {k: v for k, v in stored.headers.items() if k.startswith("Ants-")}
        await tasks.update("rp", creation.value, last=done.revision, headers=signature)
        assert (await owner.get("rp")).status is TaskStatus.DONE  # its signature was for revision 0
