"""Why an unfinished task waits: the rule (``waiting_for``, no server) for every reason, and the
reasons as the board, ``tasks``, ``get`` and ``wait`` tell them, on a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from pydantic import JsonValue

from ants_nats import (
    Agent,
    AgentCard,
    Budget,
    CapabilitySpec,
    Decline,
    EmbeddedServer,
    Ledger,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
    Waiting,
    WaitingFacts,
    WaitReason,
    waiting_for,
    why_waiting,
)
from ants_nats.models import AgentLedger, Attempt, DeclineNote, Question, Score, utcnow
from ants_nats.names import LEDGER_BUCKET, RATE_HOLD_MARK
from ants_nats.waiting import RateHold

from .helpers import until_event, until_tasks
from .test_cli import run_cli

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=utcnow().tzinfo)
FACTS = WaitingFacts(lease_ttl=10.0)


def card(agent: str, *caps: str, kinds: tuple[str, ...] | None = None, load: int = 0) -> AgentCard:
    specs = tuple(CapabilitySpec(name=cap) for cap in caps)
    return AgentCard(
        id=agent, name=agent, capabilities=specs, kinds=kinds, load=load, capacity=1, software="t"
    )


def record(status: TaskStatus = TaskStatus.PENDING, **fields: Any) -> TaskRecord:
    task = {"id": "t1", "kind": "echo", "requires": ("echo",), **fields.pop("task", {})}
    return TaskRecord(task=Task.model_validate(task), status=status, updated_at=NOW, **fields)


def why(rec: TaskRecord, cards: list[AgentCard], facts: WaitingFacts = FACTS) -> Waiting:
    waiting = waiting_for(rec, cards, facts, NOW)
    assert waiting is not None
    return waiting


ECHO = card("ant-1", "echo", kinds=("echo",))


# ---------------------------------------------------------------------- the rule, no server


def test_a_finished_task_waits_for_nothing() -> None:
    assert waiting_for(record(TaskStatus.DONE), [ECHO], FACTS, NOW) is None


def test_held_by_its_holder_until_its_lease_runs_out() -> None:
    claimed = record(TaskStatus.CLAIMED, holder="ant-1", token=3, claimed_at=NOW - timedelta(seconds=4))
    waiting = why(claimed, [ECHO])
    assert (waiting.reason, waiting.agents) == (WaitReason.HELD, ("ant-1",))
    assert waiting.until == NOW + timedelta(seconds=6)  # claimed_at + lease_ttl
    assert "held by ant-1 since 2026-12-05T11:59:56Z" in waiting.text
    # Each heartbeat renews the lease; one that ran out is said to have.
    beaten = WaitingFacts(lease_ttl=10.0, heartbeats={"t1": NOW - timedelta(seconds=1)})
    assert why(claimed, [ECHO], beaten).until == NOW + timedelta(seconds=9)
    lapsed = record(TaskStatus.CLAIMED, holder="ant-1", token=3, claimed_at=NOW - timedelta(seconds=30))
    assert "ran out" in why(lapsed, [ECHO]).text


def test_waiting_for_an_answer_until_the_question_times_out() -> None:
    question = Question(text="Which region?", asked_by="ant-1", asked_at=NOW, until=NOW + timedelta(hours=1))
    waiting = why(record(TaskStatus.WAITING_INPUT, questions=(question,)), [ECHO])
    assert (waiting.reason, waiting.until) == (WaitReason.ANSWER, NOW + timedelta(hours=1))
    assert "'Which region?'" in waiting.text


def test_dependencies_and_not_before() -> None:
    waiting = why(record(task={"depends_on": ("a", "b")}, waiting_on=("a", "b")), [ECHO])
    assert (waiting.reason, waiting.text) == (
        WaitReason.DEPENDENCIES,
        "waits for its dependencies to be done: a, b",
    )
    later = NOW + timedelta(minutes=5)
    waiting = why(record(task={"not_before": later}), [ECHO])
    assert (waiting.reason, waiting.until, waiting.text) == (
        WaitReason.NOT_BEFORE,
        later,
        "not before 2026-12-05T12:05:00Z",
    )
    assert why(record(task={"not_before": NOW - timedelta(seconds=1)}), [ECHO]).reason is WaitReason.READY


def test_unroutable_by_the_live_cards_not_the_record() -> None:
    gpu = why(record(task={"requires": ("gpu",)}), [ECHO])
    assert (gpu.reason, gpu.text) == (WaitReason.UNROUTABLE, "unroutable: no live agent has [gpu]")
    kind = why(record(task={"kind": "nohandler"}), [ECHO])
    assert kind.text == "unroutable: no live agent handles kind 'nohandler' with [echo]"
    # The record said unroutable when it was written; an agent able to take it has come since.
    stale = record(unroutable=("echo",), unroutable_reason="no live agent has [echo]")
    assert why(stale, [ECHO]).reason is WaitReason.READY


def test_declined_by_every_able_agent_names_them_and_a_not_now_s_end() -> None:
    other = card("ant-2", "echo")
    notes = (
        DeclineNote(agent="ant-1", count=2, reason="too big", at=NOW, offer=ECHO.offer, token=1),
        DeclineNote(
            agent="ant-2",
            count=1,
            reason="busy",
            at=NOW,
            offer=other.offer,
            token=2,
            until=NOW + timedelta(hours=1),
        ),
    )
    waiting = why(record(declines=notes), [ECHO, other])
    assert (waiting.reason, waiting.agents) == (WaitReason.DECLINED, ("ant-1", "ant-2"))
    assert "ant-1: too big; ant-2: busy" in waiting.text
    assert waiting.until == NOW + timedelta(hours=1)  # when ant-2's "not now" lapses
    # A decline stands while the decliner's offer does: one that changed may take it.
    changed = card("ant-2", "echo", "more")
    assert why(record(declines=notes), [ECHO, changed]).agents == ("ant-2",)


def test_retrying_after_a_failed_attempt_until_its_backoff_ends() -> None:
    failed = Attempt(
        agent="ant-1",
        token=1,
        started_at=NOW,
        ended_at=NOW - timedelta(seconds=0.5),
        outcome="failed",
        error="boom",
    )
    waiting = why(record(attempts=(failed,)), [ECHO])
    assert (waiting.reason, waiting.agents) == (WaitReason.RETRYING, ("ant-1",))
    assert "attempt 1 by ant-1 failed (boom)" in waiting.text
    assert waiting.until == NOW + timedelta(seconds=0.5)  # base 1 s, less nothing: the latest
    old = failed.model_copy(update={"ended_at": NOW - timedelta(seconds=2)})
    assert why(record(attempts=(old,)), [ECHO]).reason is WaitReason.READY


def test_a_spent_budget() -> None:
    spent = Budget(id="report", tokens=10, spent={"tokens_in": 12})
    facts = WaitingFacts(lease_ttl=10.0, budgets={"report": spent})
    waiting = why(record(task={"budget": "report"}), [ECHO], facts)
    assert waiting.reason is WaitReason.BUDGET_SPENT
    assert waiting.text.startswith("budget 'report' is spent: 12 of 10 tokens")


def test_rate_limited_until_the_latest_hold() -> None:
    holds = {
        "echo": RateHold(NOW + timedelta(seconds=30), "echo is held back"),
        "gpu": RateHold(NOW + timedelta(seconds=90), "gpu is used up"),
    }
    facts = WaitingFacts(lease_ttl=10.0, rate_holds=holds)
    both = card("ant-1", "echo", "gpu")
    waiting = why(record(task={"requires": ("echo", "gpu")}), [both], facts)
    assert (waiting.reason, waiting.until) == (WaitReason.RATE_LIMITED, NOW + timedelta(seconds=90))
    assert "echo is held back; gpu is used up" in waiting.text
    lapsed = {"echo": RateHold(NOW - timedelta(seconds=1), "over")}
    assert why(record(), [ECHO], WaitingFacts(lease_ttl=10.0, rate_holds=lapsed)).reason is WaitReason.READY


def test_only_quarantined_agents_probation_or_not_on_the_last_attempt() -> None:
    facts = WaitingFacts(lease_ttl=10.0, scores={"ant-1": {"echo": 0.16}})
    waiting = why(record(), [ECHO], facts)
    assert (waiting.reason, waiting.agents) == (WaitReason.QUARANTINED, ("ant-1",))
    assert "ant-1 (echo 0.16)" in waiting.text
    assert "on probation once its ticket has been offered 3 times" in waiting.text
    failed = Attempt(agent="x", token=1, started_at=NOW, ended_at=NOW - timedelta(hours=1), outcome="failed")
    last = record(task={"max_attempts": 2}, attempts=(failed,))
    assert "its last attempt is not spent on one" in why(last, [ECHO], facts).text
    # One trusted able agent is enough.
    assert why(record(), [ECHO, card("ant-2", "echo")], facts).reason is WaitReason.READY


def test_ready_counts_the_able_live_agents() -> None:
    busy = card("ant-2", "echo", load=1)
    waiting = why(record(), [ECHO, busy, card("ant-3", "other")])
    assert waiting == Waiting(
        reason=WaitReason.READY,
        text="ready, waiting for a free agent (2 able live agents, 1 free)",
        agents=("ant-1", "ant-2"),
    )
    assert why(record(task={"requires": ()}), []).text == "ready, waiting for an agent: none is live"


# ---------------------------------------------------------------------- on a real server


class Gate:
    """A handler that starts (``started``) and waits for ``release``; for ``ask`` tasks it asks,
    and ``picky`` ones it declines."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, task: Task, ctx: TaskContext) -> JsonValue:
        if task.kind == "ask":
            return await ctx.ask("Which region?", timeout=3600)
        if task.kind == "picky":
            raise Decline("not my kind of thing")
        self.started.set()
        await self.release.wait()
        return "done"


@asynccontextmanager
async def echo_agent(board: TaskBoard, **settings: Any) -> AsyncIterator[tuple[Agent, Gate]]:
    gate = Gate()
    agent = Agent(board, name="waiter", capabilities=settings.pop("capabilities", ["echo"]), **settings)
    for kind in ("echo", "ask", "picky"):
        agent.handler(kind)(gate.handle)
    async with agent:
        try:
            yield agent, gate
        finally:
            gate.release.set()


async def test_dependencies_held_and_not_before_on_the_board(board: TaskBoard) -> None:
    async with echo_agent(board) as (agent, gate):
        later = utcnow() + timedelta(hours=1)
        await board.submit_many(
            [
                Task(id="first", kind="echo", requires=("echo",)),
                Task(id="second", kind="echo", requires=("echo",), depends_on=("first",)),
                Task(id="later", kind="echo", requires=("echo",), not_before=later),
            ]
        )
        # (A handler's first moments are not written: its claim is, once it runs on.)
        records = await until_tasks(board, lambda r: "first" in r and r["first"].status is TaskStatus.CLAIMED)
        held = await why_waiting(board, records["first"])
        assert held is not None and (held.reason, held.agents) == (WaitReason.HELD, (agent.id,))
        assert held.until is not None and held.until > utcnow()
        second = await why_waiting(board, await board.get("second"))
        assert second is not None and (second.reason, second.text) == (
            WaitReason.DEPENDENCIES,
            "waits for its dependencies to be done: first",
        )
        not_yet = await why_waiting(board, await board.get("later"))
        assert not_yet is not None and (not_yet.reason, not_yet.until) == (WaitReason.NOT_BEFORE, later)
        gate.release.set()
        final = await board.wait(["first", "second"], timeout=20)
        assert await why_waiting(board, final["second"]) is None


async def test_waiting_for_an_answer_on_the_board(board: TaskBoard) -> None:
    async with echo_agent(board):
        await board.submit(Task(id="asks", kind="ask", requires=("echo",)))
        records = await until_tasks(board, lambda r: r["asks"].status is TaskStatus.WAITING_INPUT)
        waiting = await why_waiting(board, records["asks"])
        assert waiting is not None and waiting.reason is WaitReason.ANSWER
        assert "'Which region?'" in waiting.text and waiting.until == records["asks"].questions[-1].until


async def test_an_unroutable_kind_in_tasks_and_get(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    async with echo_agent(board):
        await board.submit(Task(id="k1", kind="nohandler", requires=("echo",)))
        reason = "unroutable: no live agent handles kind 'nohandler' with [echo]"
        listed = await asyncio.to_thread(run_cli, "tasks", "--server", nats_server.url)
        (line,) = [line for line in listed.stdout.splitlines() if line.startswith("k1 ")]
        assert line.endswith(reason), listed.stdout
        shown = await asyncio.to_thread(run_cli, "get", "k1", "--json", "--server", nats_server.url)
        got = json.loads(shown.stdout)
        assert got["waiting"] == {"reason": "unroutable", "text": reason, "until": None, "agents": []}


async def test_wait_timing_out_says_why_each_unfinished_task_waits(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    async with echo_agent(board) as (_, gate):
        await board.submit_many(
            [Task(id="quick", kind="echo"), Task(id="gpu-job", kind="render", requires=("gpu",))]
        )
        gate.release.set()
        await board.wait(["quick"], timeout=20)
        late = await asyncio.to_thread(
            run_cli, "wait", "quick", "gpu-job", "--timeout", "0.5", "--server", nats_server.url
        )
    assert late.returncode == 2
    assert "wait did not finish in time: 1 of 2 tasks unfinished" in late.stderr
    (line,) = [line for line in late.stdout.splitlines() if line.startswith("gpu-job")]
    assert line.endswith("unroutable: no live agent has [gpu]")
    assert "quick" not in late.stdout  # only what is unfinished, each with its reason


async def test_an_agent_s_scores_below_the_line_leave_only_quarantined_agents(board: TaskBoard) -> None:
    agent_id = "tainted"
    ledger = AgentLedger(agent=agent_id, scores={"echo": Score(good=0.0, bad=4.0, at=utcnow())})
    await Ledger(board.nc).ensure()
    kv = await board.nc.jetstream().key_value(LEDGER_BUCKET)
    await kv.put(agent_id, ledger.model_dump_json().encode())
    # A long backoff: it lets others go first, and reaches probation only after minutes.
    async with echo_agent(board, agent_id=agent_id, decline_backoff=600):
        await board.submit(Task(id="q1", kind="echo", requires=("echo",)))
        waiting = await why_waiting(board, await board.get("q1"))
    assert waiting is not None and (waiting.reason, waiting.agents) == (WaitReason.QUARANTINED, (agent_id,))
    assert "tainted (echo 0.17)" in waiting.text and "probation" in waiting.text


async def test_a_provider_s_hold_and_a_used_up_limit_rate_limit_a_task(board: TaskBoard) -> None:
    # Laid and set before the agent starts, which reads them: it starts none of that work.
    until = utcnow() + timedelta(minutes=10)
    await board.trail.mark(RATE_HOLD_MARK, key="llm", data={"until": until.isoformat(), "reason": "429"})
    await board.set_limit("gpu", requests=0, per=600)
    async with echo_agent(board, capabilities=["echo", "llm", "gpu"]):
        await board.submit_many(
            [
                Task(id="llm-job", kind="echo", requires=("echo", "llm")),
                Task(id="gpu-job", kind="echo", requires=("echo", "gpu")),
            ]
        )
        held = await why_waiting(board, await board.get("llm-job"))
        full = await why_waiting(board, await board.get("gpu-job"))
    assert held is not None and held.reason is WaitReason.RATE_LIMITED
    assert "llm is held back" in held.text
    assert held.until is not None and abs((held.until - until).total_seconds()) < 5
    assert full is not None and full.reason is WaitReason.RATE_LIMITED
    assert "the limit of 0 runs per 600s on gpu is used up" in full.text
    assert full.until is not None and full.until > utcnow() + timedelta(minutes=5)


async def test_a_spent_budget_on_the_board(board: TaskBoard) -> None:
    # No agent meets its ticket to fail it: it waits, and says what will become of it.
    await board.submit_many([Task(id="b1", kind="echo")], budget=Budget(id="tiny", tokens=0))
    waiting = await why_waiting(board, await board.get("b1"))
    assert waiting is not None and waiting.reason is WaitReason.BUDGET_SPENT
    assert "budget 'tiny' is spent: 0 of 0 tokens" in waiting.text


async def test_declined_by_every_able_agent_on_the_board(board: TaskBoard) -> None:
    async with echo_agent(board) as (agent, _):
        await board.submit(Task(id="p1", kind="picky", requires=("echo",)))
        await until_event(board, "task.unroutable", "p1")
        waiting = await why_waiting(board, await board.get("p1"))
    assert waiting is not None and (waiting.reason, waiting.agents) == (WaitReason.DECLINED, (agent.id,))
    assert f"{agent.id}: not my kind of thing" in waiting.text
