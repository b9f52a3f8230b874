"""The agent runtime (``Agent``) and one attempt in its hands (``RunningAttempt``): its pure
decisions without a server (the declines it remembers, the handler it picks, what it does with a
ticket it did not win, its background loops), then a few attempts on a real one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import JsonValue

from ants_nats import (
    CATCH_ALL,
    Agent,
    AntsError,
    BoardConfig,
    CapabilitySpec,
    Decline,
    Lease,
    NotTaken,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    Verdict,
)
from ants_nats.agent import Handlers, keep_running, ticket_delay
from ants_nats.attempt import Crew, Declined, RunningAttempt
from ants_nats.tracing import TaskTrace

from .helpers import until_event

WAIT_S = 20.0


async def echo(task: Task, ctx: TaskContext) -> JsonValue:
    return task.kind


async def shout(task: Task, ctx: TaskContext) -> JsonValue:
    return task.kind.upper()


def keeping(agent: Agent) -> list[RunningAttempt]:
    """The attempts ``agent`` will run, kept in order for the test to read how each ended."""
    kept: list[RunningAttempt] = []

    class Kept(RunningAttempt):
        def __init__(self, crew: Crew, msg: Msg, lease: Lease, trace: TaskTrace) -> None:
            super().__init__(crew, msg, lease, trace)
            kept.append(self)

    agent.attempt_class = Kept
    return kept


# ----------------------------------------------------------------- without a server


def test_a_decline_stands_while_the_offer_holds_and_a_not_now_lapses(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    declined = Declined()
    declined.note("t1", "offer-a")
    declined.note("t2", "offer-a", retry_after=5.0)
    assert declined.stands("t1", lambda: "offer-a") and declined.stands("t2", lambda: "offer-a")
    assert not declined.stands("t1", lambda: "offer-b")  # it offers something else now
    assert not declined.stands("t3", lambda: "offer-a")
    now[0] += 5.0
    assert declined.stands("t1", lambda: "offer-a") and not declined.stands("t2", lambda: "offer-a")


def test_the_offer_is_computed_only_for_a_task_declined() -> None:
    asked: list[str] = []

    def offer() -> str:
        asked.append("offer")
        return "offer-a"

    declined = Declined()
    assert not declined.stands("never", offer) and asked == []
    declined.note("once", "offer-a")
    assert declined.stands("once", offer) and asked == ["offer"]


def test_declines_are_forgotten_on_request_and_the_oldest_beyond_the_limit() -> None:
    declined = Declined(limit=2)
    for task_id in ("a", "b", "c"):
        declined.note(task_id, "offer")
    assert not declined.stands("a", lambda: "offer")  # the oldest made room
    assert declined.forget(["b", "unknown"]) == ["b", "unknown"]
    assert not declined.stands("b", lambda: "offer") and declined.stands("c", lambda: "offer")
    declined.note("d", "offer")
    assert declined.forget() == ["c", "d"]
    assert declined.forget() == []


def test_a_kind_goes_to_its_own_handler_else_the_catch_all() -> None:
    handlers = Handlers()
    assert handlers.for_kind("echo") is None and handlers.kinds == frozenset()
    handlers.add("echo", echo)
    assert handlers.for_kind("echo") is echo and handlers.for_kind("other") is None
    assert handlers.kinds == frozenset({"echo"})
    handlers.add(CATCH_ALL, shout)
    assert handlers.for_kind("echo") is echo and handlers.for_kind("other") is shout
    assert handlers.kinds is None  # any kind
    handlers.add("echo", shout)  # registered again: the later handler replaces it
    assert handlers.for_kind("echo") is shout


def test_the_card_names_the_kinds_handled_unless_a_catch_all_takes_any() -> None:
    # An agent is built without a connection: nothing talks to the server before it starts.
    agent = Agent(TaskBoard(Client(), BoardConfig()), name="cards", capabilities=["llm"], capacity=2)
    agent.handler("summarise")(echo)
    agent.handler("extract")(echo)
    card = agent.card()
    assert card.kinds == ("extract", "summarise") and card.capability_names == {"llm"}
    assert (card.load, card.capacity) == (0, 2)
    offer = card.offer
    agent.handler(CATCH_ALL)(shout)
    assert agent.kinds is None and agent.card().kinds is None
    assert agent.card().offer != offer  # a decline made with the old offer no longer stands


@pytest.mark.parametrize(
    ("not_taken", "delay"),
    [
        (NotTaken("t", "held", holder="other", retry_after=3.0), 3.05),
        (NotTaken("t", "not_yet", retry_after=60.0), 60.05),
        (NotTaken("t", "waiting", retry_after=0.0), 0.05),
        (NotTaken("t", "quarantined", quarantined=("llm",)), 1.5),
        (NotTaken("t", "finished", status=TaskStatus.DONE), None),
        (NotTaken("t", "not_ready"), None),
        (NotTaken("t", "unknown"), None),
        (NotTaken("t", "duplicate"), None),
    ],
)
def test_a_ticket_not_won_comes_back_when_the_task_may_be_taken_or_is_done_with(
    not_taken: NotTaken, delay: float | None
) -> None:
    assert ticket_delay(not_taken, backoff=1.5) == (None if delay is None else pytest.approx(delay))


async def test_a_failed_background_loop_is_restarted_until_the_connection_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ants_nats.agent.RETRY_BACKOFF_S", 0.0)
    nc = SimpleNamespace(is_closed=False)
    runs: list[int] = []

    def failing(times: int) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            runs.append(len(runs))
            if len(runs) <= times:
                raise RuntimeError("server away")

        return loop

    await keep_running("test", failing(2), cast(Client, nc), "ant")
    assert runs == [0, 1, 2]  # two failures, then it ran to its end
    runs.clear()
    nc.is_closed = True
    await keep_running("test", failing(5), cast(Client, nc), "ant")
    assert runs == [0]  # closed for good: nothing to come back to


# ----------------------------------------------------------------- with a server


async def test_the_catch_all_takes_other_kinds_and_the_agents_own_rule_declines(board: TaskBoard) -> None:
    def no_heavy(specs: tuple[CapabilitySpec, ...], load: int, capacity: int, task: Task) -> Verdict:
        return Verdict(task.kind != "heavy", "too heavy for me")

    agent = Agent(board, name="picky", decide=no_heavy)
    agent.handler("echo")(echo)
    agent.handler(CATCH_ALL)(shout)
    kept = keeping(agent)
    async with agent:
        await board.submit_many([Task(id=kind, kind=kind) for kind in ("echo", "other", "heavy")])
        final = await board.wait(["echo", "other"], timeout=WAIT_S)
        await until_event(board, "task.unroutable", "heavy")  # nobody else could take it
    assert (final["echo"].result, final["other"].result) == ("echo", "OTHER")
    heavy = await board.get("heavy")
    assert [(d.agent, d.reason) for d in heavy.declines] == [(agent.id, "too heavy for me")]
    assert sorted((a.task_id, a.ending) for a in kept) == [
        ("echo", "completed"),
        ("heavy", "declined"),
        ("other", "completed"),
    ]


async def test_a_cancel_stops_only_the_attempt_at_that_task(board: TaskBoard) -> None:
    started = {"stop-me": asyncio.Event(), "keep-me": asyncio.Event()}
    stopped, finish = asyncio.Event(), asyncio.Event()

    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        started[task.id].set()
        try:
            await finish.wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "finished"

    agent = Agent(board, name="two-at-once", capacity=2)
    agent.handler("work")(work)
    kept = keeping(agent)
    async with agent:
        await board.submit_many([Task(id="stop-me", kind="work"), Task(id="keep-me", kind="work")])
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), WAIT_S)
        await board.cancel("stop-me", "not needed")
        await asyncio.wait_for(stopped.wait(), WAIT_S)  # only then may the other one finish
        finish.set()
        final = await board.wait(["stop-me", "keep-me"], timeout=WAIT_S)
    assert final["stop-me"].status is TaskStatus.CANCELLED
    assert final["keep-me"].status is TaskStatus.DONE and final["keep-me"].result == "finished"
    endings = {a.task_id: a.ending for a in kept}
    assert endings == {"stop-me": "cancelled", "keep-me": "completed"}
    cancelled = next(a for a in kept if a.task_id == "stop-me")
    assert cancelled.ctx.cancelled.is_set() and not cancelled.ctx.lease_lost.is_set()
    assert agent.metrics.value("ants_agent_tasks_cancelled_total", capability="any") == 1


async def test_a_not_now_keeps_the_agent_aside_until_it_lapses(board: TaskBoard) -> None:
    runs: list[float] = []

    async def busy_once(task: Task, ctx: TaskContext) -> JsonValue:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise Decline("busy", retry_after=1.0)
        return "done"

    agent = Agent(board, name="busy-once", decline_backoff=0.05)
    agent.handler("work")(busy_once)
    kept = keeping(agent)
    async with agent:
        await board.submit(Task(id="later", kind="work"))
        assert await board.result("later", timeout=WAIT_S) == "done"
    assert [a.ending for a in kept] == ["declined", "completed"]
    assert runs[1] - runs[0] >= 0.9  # not before the decline lapsed (less the server's rounding)
    assert (await board.get("later")).attempts[-1].outcome == "completed"


async def test_forgetting_some_declines_brings_back_only_those_tasks(board: TaskBoard) -> None:
    refusing = True

    async def choosy(task: Task, ctx: TaskContext) -> JsonValue:
        if refusing:
            raise Decline("no time now")
        return task.id

    agent = Agent(board, name="choosy")
    agent.handler("work")(choosy)
    async with agent:
        await board.submit_many([Task(id="a", kind="work"), Task(id="b", kind="work")])
        for task_id in ("a", "b"):
            await until_event(board, "task.unroutable", task_id)
        assert await board.unroutable_ids() == ["a", "b"]
        refusing = False  # it has time now, and says so for a
        assert await agent.forget_declines(["a"]) == ["a"]
        assert await board.result("a", timeout=WAIT_S) == "a"
        assert await board.unroutable_ids() == ["b"]  # still declined: it stays aside
        assert await agent.forget_declines() == ["b"]
        assert await board.result("b", timeout=WAIT_S) == "b"
    assert await board.unroutable_ids() == []


async def test_run_outside_async_with_says_so_instead_of_waiting_forever(board: TaskBoard) -> None:
    agent = Agent(board, name="unstarted")
    with pytest.raises(AntsError, match="is not started: run\\(\\) serves inside 'async with agent:'"):
        await agent.run()
    async with agent:
        agent.stop()
        await agent.run()  # started: returns once stopped
    with pytest.raises(AntsError, match="is not started"):
        await agent.run()  # shut down again
    # Entered again, it serves again until stopped; shut down from elsewhere, its run() returns.
    async with agent:
        serving = asyncio.create_task(agent.run())
        for _ in range(5):
            await asyncio.sleep(0)  # (turns of the loop: a run() not waiting would be done by now)
        assert not serving.done()
    await asyncio.wait_for(serving, 10)
