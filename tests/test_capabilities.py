"""Capability broadcasting and load-aware agents on a real server."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import AsyncExitStack, aclosing
from datetime import timedelta

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AgentCard,
    CapabilitySpec,
    Decline,
    Directory,
    EmbeddedServer,
    InvalidTask,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
)
from ants_nats.matching import Verdict
from ants_nats.models import utcnow

from .conftest import TEST_CARD_TTL


class Log:
    """Which agent ran which task, checking it had every required capability."""

    def __init__(self) -> None:
        self.ran: dict[str, str] = {}
        self.misrouted: list[str] = []

    def handler_for(self, agent: Agent) -> None:
        async def run(task: Task, ctx: TaskContext) -> JsonValue:
            if not set(task.requires) <= agent.capabilities:
                self.misrouted.append(task.id)
            self.ran[task.id] = agent.name
            return agent.name

        agent.handler("work")(run)


async def test_tasks_reach_only_agents_with_all_required_capabilities(board: TaskBoard) -> None:
    log = Log()
    agents = [
        Agent(board, name="fetcher", capabilities=["fetch"]),
        Agent(board, name="parser", capabilities=["parse"]),
        Agent(board, name="both", capabilities=["fetch", "parse"]),
    ]
    for agent in agents:
        log.handler_for(agent)
    tasks = [
        *(Task(id=f"f{i}", kind="work", requires=("fetch",)) for i in range(6)),
        *(Task(id=f"p{i}", kind="work", requires=("parse",)) for i in range(6)),
        *(Task(id=f"fp{i}", kind="work", requires=("fetch", "parse")) for i in range(3)),
    ]
    async with agents[0], agents[1], agents[2]:
        await board.submit_many(tasks)
        await board.wait([t.id for t in tasks], timeout=30)
    assert log.misrouted == []
    assert {log.ran[f"fp{i}"] for i in range(3)} == {"both"}
    assert {log.ran[f"f{i}"] for i in range(6)} <= {"fetcher", "both"}
    assert {log.ran[f"p{i}"] for i in range(6)} <= {"parser", "both"}


async def test_unroutable_task_is_visible_then_runs_when_a_capable_agent_joins(board: TaskBoard) -> None:
    log = Log()
    other = Agent(board, name="other", capabilities=["fetch"])
    log.handler_for(other)
    async with other:
        record = await board.submit(Task(id="tr", kind="work", requires=("translate",)))
        assert record.unroutable == ("translate",)
        events = await board.trail.history("tr")
        assert [e.kind for e in events][:2] == ["task.submitted", "task.unroutable"]
        assert events[1].data == {"missing": ["translate"], "reason": "no live agent has [translate]"}
        translator = Agent(board, name="translator", capabilities=["translate"])
        log.handler_for(translator)
        async with translator:
            final = await board.wait(["tr"], timeout=20)
    assert final["tr"].status is TaskStatus.DONE
    assert final["tr"].unroutable is None
    assert log.ran == {"tr": "translator"}


async def test_an_agent_at_capacity_takes_no_more_and_work_spreads(board: TaskBoard) -> None:
    gate = asyncio.Event()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    six_running = asyncio.Event()

    def handler_for(agent: Agent) -> None:
        async def hold(task: Task, ctx: TaskContext) -> JsonValue:
            running[agent.name] += 1
            peak[agent.name] = max(peak[agent.name], running[agent.name])
            if sum(running.values()) == 6:
                six_running.set()
            await gate.wait()
            running[agent.name] -= 1
            return None

        agent.handler("work")(hold)

    agents = [Agent(board, name=f"w{i}", capabilities=["cpu"], capacity=2) for i in range(3)]
    for agent in agents:
        handler_for(agent)
    tasks = [Task(id=f"j{i}", kind="work", requires=("cpu",)) for i in range(12)]
    async with agents[0], agents[1], agents[2]:
        await board.submit_many(tasks)
        await asyncio.wait_for(six_running.wait(), 20)
        # Every agent is full and none beyond its capacity; the rest of the backlog waits its turn.
        assert dict(running) == {"w0": 2, "w1": 2, "w2": 2}
        cards = {c.name: c for c in await board.directory.cards()}
        gate.set()
        await board.wait([t.id for t in tasks], timeout=30)
    assert max(peak.values()) == 2
    assert all(card.capacity == 2 for card in cards.values())


async def test_a_late_joiner_sees_every_live_card_at_once(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    agents = [
        Agent(
            board, name=f"a{i}", capabilities=[CapabilitySpec(name="llm", version="2", limits={"ctx": 8e3})]
        )
        for i in range(3)
    ]
    async with agents[0], agents[1], agents[2], TaskBoard.connect(nats_server.url) as late:
        cards = await late.directory.cards()
        able = await late.directory.who_can(["llm"])
        nobody = await late.directory.who_can(["vision"])
    assert {c.id for c in cards} == {a.id for a in agents}
    assert {c.id for c in able} == {a.id for a in agents}
    assert nobody == []
    assert cards[0].capabilities[0].limits == {"ctx": 8000.0}
    assert cards[0].software == "0.1.0"


async def test_concurrent_readers_of_the_cards_share_one_pass(board: TaskBoard) -> None:
    async with Agent(board, name="a", capabilities=["llm"]) as agent:
        alone = Directory(board.nc)
        before = board.nc.stats["out_msgs"]
        (card,) = await alone.cards()
        one_pass = board.nc.stats["out_msgs"] - before
        # Twenty submissions at once, each happy with a reading a second old: one pass between them
        # (each opening its own consumer is what filled a server's consumers during an outage).
        shared = Directory(board.nc)
        before = board.nc.stats["out_msgs"]
        readings = await asyncio.gather(*(shared.cards(max_age=1.0) for _ in range(20)))
        sent = board.nc.stats["out_msgs"] - before
    assert card.id == agent.id and all([c.id for c in r] == [agent.id] for r in readings)
    assert sent <= one_pass + 1, (sent, one_pass)


async def test_a_crashed_agents_card_expires_and_a_graceful_one_is_withdrawn(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    directory = Directory(board.nc, card_ttl=TEST_CARD_TTL)
    async with aclosing(directory.watch()) as changes, AsyncExitStack() as stack:
        doomed_board = await stack.enter_async_context(
            TaskBoard.connect(nats_server.url, board.config, name="doomed")
        )
        doomed = Agent(doomed_board, name="doomed", shutdown_grace=0.1)
        await doomed.__aenter__()
        polite = Agent(board, name="polite")
        await polite.__aenter__()
        joined = set()
        async for change in changes:
            if change.kind == "joined":
                joined.add(change.agent_id)
            if joined == {doomed.id, polite.id}:
                break
        await doomed_board.nc.close()  # crash: no withdrawal, the card must expire by itself
        await polite.__aexit__(None, None, None)
        await doomed.__aexit__(None, None, None)
        left = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        async for change in changes:
            if change.kind == "left":
                left.append((change.agent_id, loop.time() - started))
            if len(left) == 2:
                break
    assert {agent for agent, _ in left} == {polite.id, doomed.id}
    assert await board.directory.cards() == []


async def test_agents_answer_nats_services_discovery(board: TaskBoard) -> None:
    agents = [Agent(board, name=f"m{i}", capabilities=["ocr"]) for i in range(2)]
    async with agents[0], agents[1]:
        inbox = board.nc.new_inbox()
        sub = await board.nc.subscribe(inbox)
        await board.nc.publish("$SRV.INFO.ants-agent", b"", reply=inbox)
        infos = [json.loads((await sub.next_msg(timeout=5)).data) for _ in agents]
        await sub.unsubscribe()
        reply = await board.nc.request(f"ants.agent.{agents[0].id}.card", b"", timeout=5)
    assert {info["metadata"]["agent_id"] for info in infos} == {a.id for a in agents}
    assert {info["metadata"]["capabilities"] for info in infos} == {"ocr"}
    assert AgentCard.model_validate_json(reply.data).id == agents[0].id


async def test_declined_tasks_go_to_another_agent_with_the_reason_recorded(board: TaskBoard) -> None:
    log = Log()

    def choosy(caps: tuple[CapabilitySpec, ...], load: int, capacity: int, task: Task) -> Verdict:
        return Verdict(False, "not my kind of work") if task.payload == "heavy" else Verdict(True)

    picky = Agent(board, name="picky", capabilities=["x"], decide=choosy, decline_backoff=5.0)
    log.handler_for(picky)

    async def refuse(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("too tired")

    grumpy = Agent(board, name="grumpy", capabilities=["x"], decline_backoff=5.0)
    grumpy.handler("work")(refuse)
    async with picky, grumpy:
        await board.submit_many(
            [
                Task(id="h", kind="work", requires=("x",), payload="heavy"),
                Task(id="l", kind="work", requires=("x",)),
            ]
        )
        helper = Agent(board, name="helper", capabilities=["x"])
        log.handler_for(helper)
        async with helper:
            final = await board.wait(["h", "l"], timeout=30)
    assert log.ran["h"] == "helper"
    reasons = {note.reason for note in final["h"].declines}
    assert reasons <= {"not my kind of work", "too tired"} and reasons
    assert final["h"].counted_attempts == 0
    assert [a.outcome for a in final["h"].attempts] == ["completed"]  # a decline is no attempt


async def test_progress_reports_and_capability_updates_reach_the_trail(board: TaskBoard) -> None:
    async def step(task: Task, ctx: TaskContext) -> JsonValue:
        await ctx.progress(0.5, "halfway")
        return "ok"

    agent = Agent(board, name="learner", capabilities=["a"])
    agent.handler("work")(step)
    async with agent:
        record = await board.submit(Task(id="needs-b", kind="work", requires=("b",)))
        assert record.unroutable == ("b",)
        await agent.update_capabilities(["a", "b"])
        final = await board.wait(["needs-b"], timeout=20)
        with pytest.raises(InvalidTask):
            await agent.update_capabilities(["Not Valid"])
    assert final["needs-b"].status is TaskStatus.DONE
    progress = [e for e in await board.trail.history("needs-b") if e.kind == "task.progress"]
    assert [e.data for e in progress] == [{"fraction": 0.5, "note": "halfway"}]
    kinds = [e.kind for e in await board.trail.replay(f"ants.trail.agent.*.{agent.id}.*")]
    assert kinds == ["agent.joined", "agent.changed", "agent.left"]


async def test_a_card_past_its_heartbeat_is_no_live_agent(board: TaskBoard) -> None:
    """A server that lost its TTL state on a crash brings back cards of long-dead agents: a card
    is live by its heartbeat, not by its key."""
    ghost = AgentCard(
        id="ghost",
        name="ghost",
        capabilities=(CapabilitySpec(name="haunt"),),
        load=0,
        capacity=1,
        software="old",
        heartbeat_at=utcnow() - timedelta(minutes=10),
    )
    await board.nc.jetstream().publish("$KV.ants_agents.ghost", ghost.model_dump_json().encode())  # no TTL
    alive = Agent(board, name="alive", capabilities=["haunt"])
    async with alive:
        assert [card.id for card in await board.directory.cards()] == [alive.id]
        assert await board.directory.card("ghost") is None
        async with aclosing(board.directory.watch()) as changes:
            first = await anext(changes)
        assert (first.kind, first.agent_id) == ("joined", alive.id)
    assert await board.directory.who_can(["haunt"]) == []
    record = await board.submit(Task(id="boo", kind="haunt", requires=("haunt",)))
    assert record.unroutable == ("haunt",)
