"""Free to decline: a decline costs nothing, work nobody will take ends visibly, nothing circulates."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, aclosing
from datetime import timedelta

from pydantic import JsonValue

from ants_nats import Agent, AgentCard, Decline, ServerUnavailable, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.models import TrailEvent, utcnow
from ants_nats.names import WORK_STREAM, trail_filter, work_consumer

from .conftest import TEST_CARD_TTL
from .helpers import Recorder, until_event, until_ledger
from .test_trust import ledger_running

WAIT_S = 20.0


async def settled_queue(board: TaskBoard, route: str) -> tuple[int, int]:
    """Tickets of ``route`` waiting and delivered but not acked: (0, 0) once nothing circulates."""
    info = await board.nc.jetstream().consumer_info(WORK_STREAM, work_consumer(route))
    return info.num_pending or 0, info.num_ack_pending or 0


async def set_aside(board: TaskBoard, task_id: str) -> TrailEvent:
    """The ``task.unroutable`` event of the agent that set ``task_id`` aside (the submitter's own,
    if the task looked unroutable when submitted, names nobody)."""
    async with aclosing(board.trail.follow(trail_filter("task.unroutable", task_id))) as events:
        async for event in events:
            if event.by is not None:
                return event
    raise AssertionError("follow ended")


def echo_agent(board: TaskBoard, name: str, recorder: Recorder, **options: object) -> Agent:
    agent = Agent(board, name=name, capabilities=["echo"], **options)  # type: ignore[arg-type]
    agent.handler("echo")(recorder.handle)
    return agent


async def test_a_misspelled_kind_stops_at_once_with_its_reason_and_costs_no_reputation(
    board: TaskBoard,
) -> None:
    recorder = Recorder()
    first, second = echo_agent(board, "first", recorder), echo_agent(board, "second", recorder)
    async with ledger_running(board), first, second:
        # Their cards say what they handle: echo, and nothing else.
        cards = {card.id: card for card in await board.directory.cards()}
        assert cards[first.id].kinds == ("echo",)
        acks = await board.nc.subscribe(f"$JS.ACK.{WORK_STREAM}.{work_consumer('echo')}.>")
        record = await board.submit(Task(id="k1", kind="nohandler", requires=("echo",)))
        reason = "no live agent handles kind 'nohandler' with [echo]"
        assert record.unroutable == () and record.unroutable_reason == reason
        # The one agent that meets its ticket declines it once and sets it aside for good.
        settled = await set_aside(board, "k1")
        assert settled.by in (first.id, second.id)
        record = await board.get("k1")
        assert record.status is TaskStatus.PENDING and record.unroutable_reason == reason
        assert [(d.count, d.reason) for d in record.declines] == [(1, "no handler for kind 'nohandler'")]
        assert record.attempts == ()  # a decline is no attempt
        ack = await acks.next_msg(timeout=WAIT_S)
        await acks.unsubscribe()
        assert ack.data in (b"", b"+ACK")  # (an empty ack is +ACK) its ticket is done with
        assert await settled_queue(board, "echo") == (0, 0)
        decliner = record.declines[0].agent
        # The ledger counts the decline apart, and the score does not move.
        ledger = await until_ledger(board, decliner, lambda e: e.totals.declined == 1)
        assert ledger.totals.failed == ledger.totals.expired == 0
        assert await board.reputation.scores(decliner, ["echo"]) == {"echo": 0.5}
        # Honest work still flows at once.
        done = await board.submit(Task(id="e1", kind="echo", requires=("echo",)))
        assert (await board.wait([done.task.id], timeout=WAIT_S))["e1"].status is TaskStatus.DONE


async def test_a_kind_only_a_later_agent_handles_runs_when_it_joins(board: TaskBoard) -> None:
    recorder = Recorder()
    async with echo_agent(board, "echoer", recorder):
        await board.submit(Task(id="late", kind="shout", requires=("echo",)))
        await set_aside(board, "late")
        shouter = Agent(board, name="shouter", capabilities=["echo"])
        shouter.handler("shout")(recorder.handle)
        async with shouter:
            final = await board.wait(["late"], timeout=WAIT_S)
    assert final["late"].status is TaskStatus.DONE
    assert recorder.by_agent == {shouter.id: 1}
    assert final["late"].unroutable_reason is None and final["late"].unroutable is None
    assert await board.unroutable_ids() == []


async def test_a_decline_storm_of_twenty_agents_keeps_the_record_bounded(board: TaskBoard) -> None:
    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("not for me")

    async with AsyncExitStack() as stack:
        agents = []
        for i in range(20):
            agent = Agent(board, name=f"no{i}", capabilities=["x"])
            agent.handler("work")(refuse)
            agents.append(await stack.enter_async_context(agent))
        await board.submit(Task(id="storm", kind="work", requires=("x",)))
        await until_event(board, "task.unroutable", "storm")
        record = await board.get("storm")
    # One note per agent, each declined once: the record does not grow with time.
    assert sorted(d.agent for d in record.declines) == sorted(a.id for a in agents)
    assert {d.count for d in record.declines} == {1}
    assert record.attempts == () and record.counted_attempts == 0
    assert record.unroutable_reason is not None
    assert record.unroutable_reason.startswith("declined by every live agent able to take it (")
    assert "not for me" in record.unroutable_reason


async def test_fail_unroutable_fails_at_once_with_the_reason(board: TaskBoard) -> None:
    recorder = Recorder()
    async with echo_agent(board, "echoer", recorder):
        records = await board.submit_many(
            [
                Task(id="fast", kind="nohandler", requires=("echo",), fail_unroutable=True),
                Task(id="after", kind="echo", requires=("echo",), depends_on=("fast",)),
            ]
        )
        assert [r.status for r in records] == [TaskStatus.FAILED, TaskStatus.FAILED]
        assert records[0].error == "no live agent handles kind 'nohandler' with [echo]"
        assert records[1].error is not None and "blocked: dependency 'fast'" in records[1].error
        # Declined by everyone able later on, it fails too (not set aside).

        async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
            raise Decline("too big")

        picky = Agent(board, name="picky", capabilities=["big"])
        picky.handler("work")(refuse)
        async with picky:
            await board.submit(Task(id="big", kind="work", requires=("big",), fail_unroutable=True))
            final = await board.wait(["big"], timeout=WAIT_S)
    assert final["big"].status is TaskStatus.FAILED
    assert final["big"].error == f"declined by every live agent able to take it ({picky.id}: too big)"
    assert recorder.runs == {}


async def test_a_changed_offer_brings_back_what_the_agent_declined(board: TaskBoard) -> None:
    recorder = Recorder()
    agent = echo_agent(board, "learner", recorder)
    async with agent:
        await board.submit(Task(id="new-trick", kind="juggle", requires=("echo",)))
        await set_aside(board, "new-trick")
        assert await board.unroutable_ids() == ["new-trick"]
        agent.handler("juggle")(recorder.handle)  # it learns the kind: its offer changes
        final = await board.wait(["new-trick"], timeout=WAIT_S)
    assert final["new-trick"].status is TaskStatus.DONE
    assert recorder.by_agent == {agent.id: 1}


async def test_not_now_lapses_and_the_same_agent_takes_the_task(board: TaskBoard) -> None:
    calls: list[str] = []

    async def busy_once(task: Task, ctx: TaskContext) -> JsonValue:
        calls.append(task.id)
        if len(calls) == 1:
            raise Decline("busy", retry_after=0.5)
        return "done at last"

    agent = Agent(board, name="busy", capabilities=["x"])
    agent.handler("work")(busy_once)
    async with agent:
        await board.submit(Task(id="later", kind="work", requires=("x",)))
        marked = await until_event(board, "task.unroutable", "later")
        assert marked.data == {
            "missing": [],
            "reason": f"declined by every live agent able to take it ({agent.id}: busy)",
        }
        # Its ticket waits on the server until the decline lapses (its id is kept meanwhile,
        # should the agent leave), then the agent takes it, and the id goes.
        assert await board.unroutable_ids() == ["later"]
        assert await board.result("later", timeout=WAIT_S) == "done at last"
        assert await board.unroutable_ids() == []
    record = await board.get("later")
    assert calls == ["later", "later"]
    assert [(d.agent, d.count) for d in record.declines] == [(agent.id, 1)]
    assert record.declines[0].until is not None


async def test_an_agent_that_joins_while_a_task_is_set_aside_is_not_missed(board: TaskBoard) -> None:
    """Set aside and joined at the same time: either the newcomer sees the key, or the decliner
    sees the newcomer's card; the task is never left unroutable with an able agent alive."""
    recorder = Recorder()

    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("no")

    refuser = Agent(board, name="refuser", capabilities=["x"])
    refuser.handler("work")(refuse)
    taker = Agent(board, name="taker", capabilities=["x"])
    taker.handler("work")(recorder.handle)
    async with refuser:
        await board.submit(Task(id="race", kind="work", requires=("x",)))
        async with taker:
            final = await board.wait(["race"], timeout=WAIT_S)
    assert final["race"].status is TaskStatus.DONE
    assert recorder.by_agent == {taker.id: 1}


async def test_declines_never_spend_attempts(board: TaskBoard) -> None:
    seen: dict[str, int] = {}

    async def flaky_then_fine(task: Task, ctx: TaskContext) -> JsonValue:
        seen[ctx.lease.agent_id] = seen.get(ctx.lease.agent_id, 0) + 1
        if ctx.lease.agent_id == refuser.id:
            raise Decline("not mine")
        return "ok"

    refuser = Agent(board, name="refuser", capabilities=["x"])
    refuser.handler("work")(flaky_then_fine)
    async with refuser:
        await board.submit(Task(id="once", kind="work", requires=("x",), max_attempts=1))
        await until_event(board, "task.unroutable", "once")
        worker = Agent(board, name="worker", capabilities=["x"])
        worker.handler("work")(flaky_then_fine)
        async with worker:
            final = await asyncio.wait_for(board.wait(["once"]), WAIT_S)
    assert final["once"].status is TaskStatus.DONE  # max_attempts=1 and a decline before it
    assert seen == {refuser.id: 1, worker.id: 1}


async def test_a_task_set_aside_still_fails_at_its_deadline(board: TaskBoard) -> None:
    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("no")

    refuser = Agent(board, name="refuser", capabilities=["x"])
    refuser.handler("work")(refuse)
    async with refuser:
        deadline = utcnow() + timedelta(seconds=1)
        await board.submit(Task(id="due", kind="work", requires=("x",), deadline=deadline))
        await set_aside(board, "due")
        # Its ticket is held back until the deadline; whoever meets it then fails it.
        final = await board.wait(["due"], timeout=WAIT_S)
    assert final["due"].status is TaskStatus.FAILED
    assert final["due"].error == "deadline passed before a claim"
    assert await board.unroutable_ids() == []


async def test_a_decliner_settles_the_ticket_of_a_task_cancelled_since(board: TaskBoard) -> None:
    """Stepping aside is for a task waiting for a taker: a decliner that meets the ticket of a
    task cancelled since judges it as any ticket (and acks it), rather than pass it on for ever."""

    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("no")

    gate = asyncio.Event()

    async def hold(task: Task, ctx: TaskContext) -> JsonValue:
        await gate.wait()
        return "held"

    refuser = Agent(board, name="refuser", capabilities=["x"])
    refuser.handler("work")(refuse)
    busy = Agent(board, name="busy", capabilities=["x"])  # able, but busy with the gate
    busy.handler("work")(refuse)
    busy.handler("gate")(hold)
    async with busy:
        await board.submit(Task(id="gate", kind="gate", requires=("x",)))
        await until_event(board, "task.claimed", "gate")
        async with refuser:
            await board.submit(Task(id="t", kind="work", requires=("x",)))
            await until_event(board, "task.declined", "t")
            acks = await board.nc.subscribe(f"$JS.ACK.{WORK_STREAM}.{work_consumer('x')}.>")
            await board.cancel("t")
            # (An empty ack is +ACK; the refuser's step-aside naks may come first.)
            while (await acks.next_msg(timeout=WAIT_S)).data not in (b"", b"+ACK"):
                pass
            await acks.unsubscribe()
            assert await settled_queue(board, "x") == (0, 1)  # only the gate's, still held
        gate.set()
        assert (await board.wait(["gate"], timeout=WAIT_S))["gate"].status is TaskStatus.DONE


async def test_a_departed_agents_not_now_holds_nothing_back(board: TaskBoard) -> None:
    recorder = Recorder()

    async def not_now(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("busy", retry_after=600)

    passing = Agent(board, name="passing", capabilities=["x"])
    passing.handler("work")(not_now)
    async with passing:
        await board.submit(Task(id="t", kind="work", requires=("x",)))
        await set_aside(board, "t")  # its ticket is held back for the "not now" ...
    # ... but the passer left: a newcomer finds the task all the same.
    assert await board.unroutable_ids() == ["t"]
    newcomer = Agent(board, name="newcomer", capabilities=["x"])
    newcomer.handler("work")(recorder.handle)
    async with newcomer:
        final = await board.wait(["t"], timeout=WAIT_S)
    assert final["t"].status is TaskStatus.DONE and recorder.by_agent == {newcomer.id: 1}


async def test_cancelling_a_task_set_aside_forgets_it(board: TaskBoard) -> None:
    recorder = Recorder()
    async with echo_agent(board, "echoer", recorder):
        await board.submit(Task(id="odd", kind="odd", requires=("echo",)))
        await set_aside(board, "odd")
        assert await board.unroutable_ids() == ["odd"]
        await board.cancel("odd")
        assert await board.unroutable_ids() == []


async def test_an_agent_whose_card_lapsed_brings_back_what_was_set_aside_meanwhile(
    board: TaskBoard,
) -> None:
    """Announcements failing for longer than the card TTL (a partition): the others give up on
    the agent and set a task aside; when its card is announced again, it looks for what it can
    take. (It is busy meanwhile, so it does not pull the task itself.)"""
    recorder = Recorder()
    gate = asyncio.Event()

    async def hold(task: Task, ctx: TaskContext) -> JsonValue:
        await gate.wait()
        return "held"

    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("no")

    away = Agent(board, name="away", capabilities=["x"])
    away.handler("work")(recorder.handle)
    away.handler("gate")(hold)
    refuser = Agent(board, name="refuser", capabilities=["x"])
    refuser.handler("work")(refuse)
    announce = board.directory.announce
    cut_off = asyncio.Event()

    async def failing(card: AgentCard) -> None:
        if card.id == away.id and cut_off.is_set():
            raise ServerUnavailable("cut off")
        await announce(card)

    board.directory.announce = failing  # type: ignore[method-assign]
    async with away:
        await board.submit(Task(id="gate", kind="gate", requires=("x",)))
        await until_event(board, "task.claimed", "gate")
        cut_off.set()
        await board.directory.withdraw(away.id)  # its card lapses, as it would on the server
        async with refuser:
            await board.submit(Task(id="t", kind="work", requires=("x",)))
            await set_aside(board, "t")
            await asyncio.sleep(TEST_CARD_TTL)  # the partition outlasts the card's TTL ...
            async with aclosing(board.directory.watch()) as changes:
                cut_off.clear()  # ... and heals: its card is announced again
                async for change in changes:
                    if change.agent_id == away.id:
                        break
            gate.set()
            # Set aside, the task has no ticket: only the agent's rerouting brings it back.
            final = await board.wait(["t", "gate"], timeout=WAIT_S)
    assert final["t"].status is TaskStatus.DONE and recorder.by_agent == {away.id: 1}
