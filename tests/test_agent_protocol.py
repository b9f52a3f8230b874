"""The Synadia Agent Protocol for NATS (v0.3), both ways, against the official SDKs.

Callers use the board: the gateway presents routes as protocol agents, driven here by the caller
SDK (``synadia-ai-agents``: ``discover``, ``prompt``, ``status``). Protocol agents work the board:
an ``Agent`` whose handler is ``via_agent_protocol`` prompts an agent hosted with the host SDK
(``synadia-ai-agent-service``). Everything on a real nats-server.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import pytest
from pydantic import JsonValue
from synadia_ai.agent_service import AgentService, PromptStream, RequestRejectedError
from synadia_ai.agents import (
    Agent as ProtocolAgent,
)
from synadia_ai.agents import (
    Agents,
    DiscoverFilter,
    Envelope,
    HeartbeatPayload,
    ProtocolError,
    ResponseChunk,
    StatusChunk,
    StreamMessage,
)

from ants_nats import (
    Agent,
    AgentProtocolError,
    Decline,
    EmbeddedServer,
    NonRetryable,
    RateLimited,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    connect,
    via_agent_protocol,
)
from ants_nats.agent_protocol import parse_progress_status, progress_status
from services.agent_gateway import AgentGateway, RouteSpec, task_id_for

from .conftest import ContainerServer, fresh_board
from .helpers import EventDict, log_spy, until_event

ROOT = Path(__file__).parents[1]
WAIT_S = 20.0

Answer = Callable[[Envelope, PromptStream], Awaitable[None]]


# ------------------------------------------------------------------- helpers


@pytest.fixture
async def board(nats_server: EmbeddedServer | ContainerServer) -> AsyncIterator[TaskBoard]:
    """An empty board whose cards live 5 s. (The suite's 1 s is shorter than an agent's cycle of
    announcements, a third of the TTL plus at least a second between two, so live agents would
    blink out of the directory, and the gateway answer 404 for them meanwhile.)"""
    async with fresh_board(nats_server.url, card_ttl=5.0) as b:
        yield b


@asynccontextmanager
async def caller(url: str) -> AsyncIterator[Agents]:
    """The caller SDK on a connection of its own."""
    async with connect(url, name="caller") as nc:
        agents = Agents(nc=nc)
        try:
            yield agents
        finally:
            await agents.close()


async def discovered(agents: Agents, name: str) -> list[ProtocolAgent]:
    """The protocol agents discovery finds presenting route instance ``name``."""
    return await agents.discover(filter=DiscoverFilter(session_name=name))


async def route_agent(agents: Agents, name: str) -> ProtocolAgent:
    """The one protocol agent presenting route instance ``name``."""
    found = await discovered(agents, name)
    assert len(found) == 1, found
    return found[0]


def prompt(agent: ProtocolAgent, text: str | Envelope) -> AsyncGenerator[StreamMessage, None]:
    """One prompt's stream (an async generator: close it when leaving early)."""
    return cast("AsyncGenerator[StreamMessage, None]", agent.prompt(text, timeout=WAIT_S))


async def ask(agent: ProtocolAgent, text: str | Envelope) -> list[StreamMessage]:
    """Every message of one prompt's stream, until its terminator."""
    async with aclosing(prompt(agent, text)) as stream:
        return [message async for message in stream]


async def ask_refused(
    agent: ProtocolAgent, text: str | Envelope
) -> tuple[list[StreamMessage], ProtocolError]:
    """Every message of one prompt's stream before the error that ends it, and that error."""
    messages: list[StreamMessage] = []
    with pytest.raises(ProtocolError) as refused:
        async with aclosing(prompt(agent, text)) as stream:
            async for message in stream:
                messages.append(message)
    return messages, refused.value


def statuses(messages: list[StreamMessage]) -> list[str]:
    return [m.status for m in messages if isinstance(m, StatusChunk)]


def answer_of(messages: list[StreamMessage]) -> str:
    return "".join(m.text for m in messages if isinstance(m, ResponseChunk))


@asynccontextmanager
async def gateway(board: TaskBoard, *routes: str, **settings: object) -> AsyncIterator[AgentGateway]:
    specs = [RouteSpec.parse(r) for r in routes] if routes else None
    async with AgentGateway(board, routes=specs, heartbeat_interval=1, **settings) as gw:  # type: ignore[arg-type]
        yield gw


def scribe(board: TaskBoard, name: str, capabilities: list[str], *, kind: str = "prompt") -> Agent:
    """An agent with ``capabilities`` whose only handler, for ``kind``, says who did what."""
    ant = Agent(board, name=name, capabilities=capabilities)

    @ant.handler(kind)
    async def write(task: Task, ctx: TaskContext) -> JsonValue:
        assert isinstance(task.payload, dict)
        return f"{name} did {task.payload['prompt']}"

    return ant


@contextmanager
def gateway_log() -> Iterator[Callable[..., Awaitable[EventDict]]]:
    """Listen to the gateway's log (from now on); yields: the next event of a kind and fields."""
    heard: asyncio.Queue[EventDict] = asyncio.Queue()

    def note(event: EventDict) -> None:
        if str(event.get("event")).startswith("gateway."):
            heard.put_nowait(dict(event))

    async def logged(kind: str, **fields: object) -> EventDict:
        while True:
            event = await asyncio.wait_for(heard.get(), WAIT_S)
            if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event

    with log_spy(note):
        yield logged


@asynccontextmanager
async def protocol_agent(url: str, answer: Answer, *, agent: str = "echo") -> AsyncIterator[AgentService]:
    """An agent hosted with the host SDK, as ``agents.prompt.<agent>.test.default``."""
    async with connect(url, name=f"host-{agent}") as nc:
        service = AgentService(
            agent=agent,
            owner="test",
            session_name="default",
            nc=nc,
            heartbeat_interval_s=1,
            max_concurrent_prompts=8,
        )
        service.on_prompt(answer)
        await service.start()
        try:
            yield service
        finally:
            await service.stop()


@asynccontextmanager
async def bridge(board: TaskBoard, target: str, *, discover_wait: float = 2.0) -> AsyncIterator[Agent]:
    """An ants agent with capability llm whose 'prompt' tasks the protocol agent ``target`` does."""
    ant = Agent(board, name="bridge", capabilities=["llm"], capacity=4, decline_backoff=0.2)
    ant.handler("prompt")(via_agent_protocol(board.nc, target, discover_wait=discover_wait))
    async with ant:
        yield ant


@asynccontextmanager
async def heartbeats(url: str, subject: str) -> AsyncIterator[Callable[[], Awaitable[HeartbeatPayload]]]:
    """Listen to the heartbeats on ``subject`` (from now on); yields: the next one."""
    async with connect(url, name="listener") as nc:
        sub = await nc.subscribe(subject)
        await nc.flush()

        async def next_beat() -> HeartbeatPayload:
            return HeartbeatPayload.model_validate_json((await sub.next_msg(timeout=WAIT_S)).data)

        try:
            yield next_beat
        finally:
            await sub.unsubscribe()


# ------------------------------------------------------------------- callers use the board


async def test_callers_discover_each_route_with_its_live_agents_and_queue(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        scribe(board, "writer", ["llm"]),
        gateway(board, "llm", "research:llm,web"),
        caller(nats_server.url) as agents,
    ):
        found = {a.session_name: a for a in await agents.discover()}
        assert set(found) == {"llm", "research"}  # the caller SDK finds ants-nats agents now
        llm = found["llm"]
        assert (llm.agent, llm.owner, llm.protocol_version) == ("ants-nats", "ants", "0.3")
        assert llm.prompt_subject == "agents.prompt.ants-nats.ants.llm"
        assert llm.prompt_endpoint.queue_group == "agents"
        assert {e.name for e in llm.endpoints} == {"prompt", "status"}
        assert (llm.metadata["ants_route"], found["research"].metadata["ants_route"]) == ("llm", "llm=web")

        status = await llm.status()
        assert status.extras == {
            "route": "llm",
            "capabilities": ["llm"],
            "kind": "prompt",
            "live_agents": 1,
            "queue_depth": 0,
            "in_flight": 0,
        }
        research = (await found["research"].status()).extras  # a named route stays, saying why
        assert (research["live_agents"], research["note"]) == (0, "no live agent has [web]")

        # Tasks nobody can take wait on the route: its heartbeats say how many.
        async with heartbeats(nats_server.url, "agents.hb.ants-nats.ants.research") as next_beat:
            for i in range(2):
                await board.submit(Task(id=f"r{i}", kind="prompt", requires=("web", "llm")))
            beat = await next_beat()
            while beat.extras["queue_depth"] != 2:  # counted once a second, like the beats
                beat = await next_beat()
        assert beat.extras["capabilities"] == ["llm", "web"] and beat.extras["in_flight"] == 0


async def test_without_routes_each_route_of_the_board_is_presented_while_an_agent_can_take_it(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    lacking = "no live agent handles kind 'prompt' with [web]"
    fetcher = scribe(board, "fetcher", ["web"], kind="fetch")  # web, but no prompts
    with gateway_log() as logged:
        async with gateway(board) as gw, caller(nats_server.url) as agents, fetcher:
            await board.submit(Task(id="w", kind="prompt", requires=("web",), payload={"prompt": "w"}))
            await logged("gateway.route_unserved", route="web", reason=lacking)
            assert gw.presented == {} and await discovered(agents, "web") == []

            # An agent that can take its prompts joins: the route is presented (and the task runs).
            async with scribe(board, "first", ["web"]):
                await logged("gateway.route_presented", route="web")
                web = await route_agent(agents, "web")
                assert answer_of(await ask(web, "the news")) == "first did the news"
                assert (await board.wait(["w"], timeout=WAIT_S))["w"].result == "first did w"
            # It leaves: the route goes (no restart), until another one joins.
            await logged("gateway.route_withdrawn", route="web", reason=lacking)
            assert await discovered(agents, "web") == []
            async with scribe(board, "second", ["web"]):
                await logged("gateway.route_presented", route="web")
                assert answer_of(await ask(await route_agent(agents, "web"), "more")) == "second did more"


async def test_a_route_stays_while_its_prompts_are_in_flight(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    worker = Agent(board, name="worker", capabilities=["web"])

    @worker.handler("prompt")
    async def slow(task: Task, ctx: TaskContext) -> JsonValue:
        started.set()
        await release.wait()
        return "late but whole"

    with gateway_log() as logged:
        async with worker, gateway(board) as gw, caller(nats_server.url) as agents:
            await board.routes.register(("web",))
            await logged("gateway.route_presented", route="web")
            asking = asyncio.create_task(ask(await route_agent(agents, "web"), "take your time"))
            await asyncio.wait_for(started.wait(), WAIT_S)

            await worker.update_capabilities(["news"])  # nobody can take web prompts now
            await logged("gateway.route_unserved", route="web", reason="no live agent has [web]")
            assert "web" in gw.presented  # withdrawing it would cut the stream in flight
            release.set()
            assert answer_of(await asyncio.wait_for(asking, WAIT_S)) == "late but whole"
            await logged("gateway.route_withdrawn", route="web")
            assert await discovered(agents, "web") == []


async def test_a_route_whose_agents_lack_its_kind_says_why_at_once(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    """The default kind, prompt, with an agent that has the route's capability but handles only
    echo: the caller hears why at once, and waits for nothing."""
    why = "no live agent handles kind 'prompt' with [llm]"
    async with (
        scribe(board, "echoer", ["llm"], kind="echo"),
        gateway(board, "llm"),
        caller(nats_server.url) as agents,
    ):
        llm = await route_agent(agents, "llm")
        status = (await llm.status()).extras
        assert (status["live_agents"], status["note"]) == (0, why)
        with pytest.raises(ProtocolError, match=f"service error 404: {re.escape(why)}$"):
            await asyncio.wait_for(ask(llm, "hello?"), WAIT_S)
        assert await board.all_tasks() == []  # a new task nobody can take is not submitted

        # A task already on the board under the caller's key: followed, it says why it waits, then 404.
        await board.submit(
            Task(
                id="k1",
                kind="prompt",
                requires=("llm",),
                payload={"prompt": "later"},
                created_by="agent-gateway",
            )
        )
        job = Envelope(prompt="later", idempotency_key="k1")
        messages, refused = await asyncio.wait_for(ask_refused(llm, job), WAIT_S)
        assert statuses(messages) == ["ack", "task k1 pending", f"task k1 unroutable: {why}"]
        assert str(refused) == (
            f"service error 404: task k1 is unroutable: {why}; it runs once an able agent joins "
            "(prompt again with the same idempotency_key to follow it)"
        )
        # An agent able to take it joins: the task runs, and the same key follows it to its result.
        async with scribe(board, "writer", ["llm"]):
            assert answer_of(await ask(llm, job)) == "writer did later"


async def test_a_prompt_every_able_agent_declines_ends_saying_why(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    picky = Agent(board, name="picky", capabilities=["llm"])

    @picky.handler("prompt")
    async def decline(task: Task, ctx: TaskContext) -> JsonValue:
        raise Decline("not my kind of prompt")

    async with picky, gateway(board, "llm"), caller(nats_server.url) as agents:
        llm = await route_agent(agents, "llm")
        job = Envelope(prompt="write a sonnet", idempotency_key="p1")
        messages, refused = await asyncio.wait_for(ask_refused(llm, job), WAIT_S)
    why = (await board.get("p1")).unroutable_reason
    assert why is not None and "not my kind of prompt" in why
    assert statuses(messages) == ["ack", "task p1 pending", f"task p1 unroutable: {why}"]
    assert str(refused).startswith(f"service error 404: task p1 is unroutable: {why};")


async def test_a_prompt_streams_the_tasks_progress_then_its_result(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    writer = Agent(board, name="writer", capabilities=["llm"])

    @writer.handler("prompt")
    async def write(task: Task, ctx: TaskContext) -> JsonValue:
        await ctx.progress(0.5, "halfway")
        assert isinstance(task.payload, dict)
        return f"summary of {task.payload['prompt']}"

    async with writer, gateway(board, "llm"), caller(nats_server.url) as agents:
        llm = await route_agent(agents, "llm")
        messages = await ask(llm, Envelope(prompt="ants on a log", style="terse"))

    said = statuses(messages)
    assert said[0] == "ack"  # §6.4: the first message
    task_id = said[1].split()[1]
    assert said[1] == f"task {task_id} pending" and task_id.startswith("prompt-")
    assert "progress 0.5 halfway" in said
    assert isinstance(messages[-1], ResponseChunk)  # progress first, the result last
    assert answer_of(messages) == "summary of ants on a log"
    record = await board.get(task_id)
    assert record.status is TaskStatus.DONE and record.task.created_by == "agent-gateway"
    assert record.task.payload == {"prompt": "ants on a log", "style": "terse"}  # §5.6: extras kept


async def test_prompting_again_with_the_same_key_follows_the_task_without_doing_it_twice(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    runs: Counter[str] = Counter()
    started, release = asyncio.Event(), asyncio.Event()
    builder = Agent(board, name="builder", capabilities=["llm"])

    @builder.handler("prompt")
    async def build(task: Task, ctx: TaskContext) -> JsonValue:
        runs[task.id] += 1
        await ctx.progress(0.1, "started")
        started.set()
        await release.wait()
        return "built once"

    job = Envelope(prompt="build it", idempotency_key="job-1")
    async with builder, gateway(board, "llm"), caller(nats_server.url) as agents:
        llm = await route_agent(agents, "llm")
        # The first caller loses its stream as soon as it learns the task.
        async with aclosing(prompt(llm, job)) as stream:
            async for message in stream:
                if isinstance(message, StatusChunk) and message.status.startswith("task "):
                    assert message.status == "task job-1 pending"
                    break
        await asyncio.wait_for(started.wait(), WAIT_S)

        # Again with the same key: the stream follows the task already at work.
        messages: list[StreamMessage] = []
        async with aclosing(prompt(llm, job)) as stream:
            async for message in stream:
                messages.append(message)
                if isinstance(message, StatusChunk) and message.status.startswith("task "):
                    assert message.status == "task job-1 claimed"
                    release.set()
        assert "progress 0.1 started" in statuses(messages)  # reported before this prompt came
        assert answer_of(messages) == "built once"

        # Once done, the same key answers at once; a key that is no task id derives one.
        assert answer_of(await ask(llm, job)) == "built once"
        odd = Envelope(prompt="build it", idempotency_key="order #42 / build")
        assert statuses(await ask(llm, odd))[1] == f"task {task_id_for('order #42 / build')} pending"

        # The same key for another prompt is a conflict, and nothing is submitted.
        with pytest.raises(ProtocolError, match="service error 409"):
            await ask(llm, Envelope(prompt="something else", idempotency_key="job-1"))

    assert runs == {"job-1": 1, task_id_for("order #42 / build"): 1}
    assert sorted(r.task.id for r in await board.all_tasks()) == sorted(runs)


async def test_each_error_is_its_status_code(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    worker = Agent(board, name="worker", capabilities=["llm"])
    held = asyncio.Event()

    @worker.handler("prompt")
    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        assert isinstance(task.payload, dict)
        if task.payload["prompt"] == "unparseable":
            raise NonRetryable("cannot parse that")
        held.set()
        await asyncio.Event().wait()  # until cancelled
        return None

    async with worker, gateway(board, "llm", "web"), caller(nats_server.url) as agents:
        llm, web = await route_agent(agents, "llm"), await route_agent(agents, "web")

        with pytest.raises(ProtocolError, match="service error 400: idempotency_key must be a string"):
            await ask(llm, Envelope(prompt="x", idempotency_key=42))
        with pytest.raises(ProtocolError, match=r"service error 404: no live agent has \[web\]"):
            await ask(web, "fetch the news")
        failed = r"service error 500: task '.+' is failed: NonRetryable: cannot parse that"
        with pytest.raises(ProtocolError, match=failed):
            await ask(llm, "unparseable")

        # A cancelled task ends its stream with a 500 naming the reason.
        cancelled = asyncio.create_task(ask(llm, Envelope(prompt="wait", idempotency_key="doomed")))
        await asyncio.wait_for(held.wait(), WAIT_S)
        await board.cancel("doomed", "the caller gave up")
        with pytest.raises(ProtocolError, match=r"service error 500: .*cancelled: the caller gave up"):
            await asyncio.wait_for(cancelled, WAIT_S)

    statuses_by_id = {r.task.id: r.status for r in await board.all_tasks()}
    assert TaskStatus.FAILED in statuses_by_id.values() and statuses_by_id["doomed"] is TaskStatus.CANCELLED
    assert len(statuses_by_id) == 2  # the 400 and the 404 submitted nothing


async def test_a_task_that_outlives_the_prompts_wait_is_504(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    worker = Agent(board, name="worker", capabilities=["llm"])

    @worker.handler("prompt")
    async def asks(task: Task, ctx: TaskContext) -> JsonValue:
        return await ctx.ask("Which one?")  # nobody answers: the task waits

    async with worker, gateway(board, "llm", max_wait=1), caller(nats_server.url) as agents:
        llm = await route_agent(agents, "llm")
        with pytest.raises(ProtocolError, match=r"service error 504: task slow has not finished within 1s"):
            await ask(llm, Envelope(prompt="plan it", idempotency_key="slow"))
    assert (await board.get("slow")).status is TaskStatus.WAITING_INPUT  # it goes on; a re-prompt follows it


async def test_work_the_swarm_holds_back_is_429(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    worker = Agent(board, name="worker", capabilities=["llm"])

    @worker.handler("prompt")
    async def limited(task: Task, ctx: TaskContext) -> JsonValue:
        raise RateLimited("the llm provider allows no more now", retry_after=30)

    gateway_heard = asyncio.Event()

    def heard(event: EventDict) -> None:
        if event.get("event") == "limit.hold_heard" and event.get("agent") == "agent-gateway":
            gateway_heard.set()

    with log_spy(heard):
        async with worker, gateway(board, "llm"), caller(nats_server.url) as agents:
            llm = await route_agent(agents, "llm")
            # A provider's 429 met by one agent holds llm work back swarm-wide; the gateway hears it.
            await board.submit(Task(id="first", kind="prompt", requires=("llm",)))
            await asyncio.wait_for(gateway_heard.wait(), WAIT_S)
            with pytest.raises(ProtocolError, match=r"service error 429: a provider rate-limited this work"):
                await ask(llm, "summarise")
    assert [r.task.id for r in await board.all_tasks()] == ["first"]  # the 429 submitted nothing


# ------------------------------------------------------------------- protocol agents work the board


async def test_a_protocol_agent_does_the_tasks_of_a_capability(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    seen: list[Envelope] = []

    async def answer(envelope: Envelope, stream: PromptStream) -> None:
        seen.append(envelope)
        await stream.send("you said: ")
        await stream.send(envelope.prompt)

    async with protocol_agent(nats_server.url, answer), bridge(board, "echo"):
        await board.submit_many(
            [
                Task(id="t1", kind="prompt", requires=("llm",), payload="hello"),
                Task(id="t2", kind="prompt", requires=("llm",), payload={"prompt": "hi", "style": "terse"}),
                Task(id="t3", kind="prompt", requires=("llm",), payload={"n": 3}),
            ]
        )
        final = await board.wait(["t1", "t2", "t3"], timeout=WAIT_S)

    assert {i: r.result for i, r in final.items()} == {
        "t1": "you said: hello",
        "t2": "you said: hi",
        "t3": 'you said: {"n": 3}',
    }
    assert all(len(r.attempts) == 1 and r.attempts[0].agent.startswith("bridge-") for r in final.values())
    notes = [e.data["note"] for e in await board.trail.replay("ants.trail.task.progress.t1.*")]  # type: ignore[call-overload,index]
    assert notes == ["you said: ", "hello"]  # one report per chunk, in order
    assert {e.prompt: e.extras for e in seen}["hi"] == {"style": "terse"}  # relayed as §5.6 asks


async def test_a_handler_made_with_a_url_has_a_connection_of_its_own_while_open(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async def answer(envelope: Envelope, stream: PromptStream) -> None:
        await stream.send(f"[{envelope.prompt}]")

    handler = via_agent_protocol(nats_server.url, "echo.test")
    ant = Agent(board, name="remote", capabilities=["llm"])
    ant.handler("prompt")(handler)
    async with protocol_agent(nats_server.url, answer), handler, ant:
        await board.submit(Task(id="u1", kind="prompt", requires=("llm",), payload="x"))
        assert await board.result("u1", timeout=WAIT_S) == "[x]"
    # Closed, it has no connection: its attempt fails, saying why.
    await board.submit(Task(id="u2", kind="prompt", requires=("llm",), payload="y", max_attempts=1))
    late = Agent(board, name="late", capabilities=["llm"])
    late.handler("prompt")(handler)
    async with late:
        final = (await board.wait(["u2"], timeout=WAIT_S))["u2"]
    assert final.status is TaskStatus.DEAD
    assert final.attempts[0].error == (
        "AgentProtocolError: open the handler first: async with via_agent_protocol(url, ...)"
    )


async def test_the_protocol_agents_errors_fail_or_decline_the_task(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async def refuse(envelope: Envelope, stream: PromptStream) -> None:
        code = int(envelope.prompt)
        if code == 500:
            raise RuntimeError("the model crashed")
        raise RequestRejectedError(code, f"refused with {code}")

    async with protocol_agent(nats_server.url, refuse), bridge(board, "echo"):
        await board.submit(Task(id="invalid", kind="prompt", requires=("llm",), payload="400"))
        await board.submit(Task(id="crash", kind="prompt", requires=("llm",), payload="500", max_attempts=1))
        final = await board.wait(["invalid", "crash"], timeout=WAIT_S)
        # 429: a rate limit: the task goes back uncounted, and llm work is held back swarm-wide.
        await board.submit(Task(id="busy", kind="prompt", requires=("llm",), payload="429"))
        released = await asyncio.wait_for(until_event(board, "task.released", "busy"), WAIT_S)
        held = await asyncio.wait_for(until_event(board, "mark.rate.held", "llm"), WAIT_S)
        await board.cancel("busy")

    invalid, crash = final["invalid"], final["crash"]
    assert invalid.status is TaskStatus.FAILED and len(invalid.attempts) == 1  # 400: for good
    assert invalid.error == "NonRetryable: protocol agent echo answered 400: refused with 400"
    assert crash.status is TaskStatus.DEAD  # 500: the attempt failed (one allowed)
    assert crash.attempts[0].outcome == "failed"
    assert crash.attempts[0].error == "AgentProtocolError: protocol agent echo answered 500: handler error"
    assert isinstance(released.data, dict) and "answered 429: refused with 429" in str(released.data)
    assert isinstance(held.data, dict) and "answered 429" in str(held.data["reason"])
    assert (await board.get("busy")).counted_attempts == 0


async def test_no_protocol_agent_to_prompt_declines_until_one_answers(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async def answer(envelope: Envelope, stream: PromptStream) -> None:
        await stream.send("late but here")

    async with bridge(board, "echo.test.default", discover_wait=0.3):
        await board.submit(Task(id="early", kind="prompt", requires=("llm",), payload="hello?"))
        declined = await asyncio.wait_for(until_event(board, "task.declined", "early"), WAIT_S)
        assert "no protocol agent echo.test.default" in str(declined.data)
        async with protocol_agent(nats_server.url, answer):
            assert await board.result("early", timeout=WAIT_S) == "late but here"
    assert (await board.get("early")).attempts[-1].outcome == "completed"


async def test_a_caller_reaches_a_protocol_agent_through_the_swarm(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    """Both directions at once: caller -> gateway -> board -> ants agent -> protocol agent."""

    async def think(envelope: Envelope, stream: PromptStream) -> None:
        for word in ("ants ", "are ", "many"):
            await stream.send(word)

    async with (
        protocol_agent(nats_server.url, think, agent="thinker"),
        bridge(board, "thinker"),
        gateway(board, "llm"),
        caller(nats_server.url) as agents,
    ):
        messages = await ask(await route_agent(agents, "llm"), "what are ants?")
    assert answer_of(messages) == "ants are many"
    assert [s for s in statuses(messages) if s.startswith("progress")] == [
        "progress 0 ants",
        "progress 0 are",
        "progress 0 many",
    ]


def test_progress_reports_travel_as_status_tokens_and_back() -> None:
    assert progress_status(0.5, "halfway") == "progress 0.5 halfway"
    assert parse_progress_status("progress 0.5 halfway there") == (0.5, "halfway there")
    assert parse_progress_status("progress 1") == (1.0, "")
    assert parse_progress_status("ack") is None
    assert parse_progress_status("progress 7 too far") is None
    assert parse_progress_status("progress soon") is None


async def test_without_the_extra_the_error_says_which_to_install(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "synadia_ai.agents", None)  # as if it were not installed
    with pytest.raises(AgentProtocolError, match=r"pip install 'ants-nats\[agent-protocol\]'"):
        via_agent_protocol(board.nc, "echo")
    with pytest.raises(AgentProtocolError, match="agent-protocol extra"):
        AgentGateway(board)


# ------------------------------------------------------------------- the command line


async def test_the_command_line_agent_and_gateway_processes(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async def answer(envelope: Envelope, stream: PromptStream) -> None:
        await stream.send(envelope.prompt.upper())

    env = {**os.environ, "ANTS_LOG_LEVEL": "WARNING"}
    url = nats_server.url
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(protocol_agent(url, answer, agent="shouter"))
        via = ["ants_nats.cli", "agent", "--cap", "llm", "--via-agent-protocol", "shouter"]
        front = ["services.agent_gateway", "--route", "llm", "--heartbeat-interval", "1"]
        for module, *args in (via, front):
            argv = ["-m", module, *args, "--server", url]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
            )
            stack.push_async_callback(stopped, proc)
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), WAIT_S)  # each says when it is up
        agents = await stack.enter_async_context(caller(url))
        messages = await ask(await route_agent(agents, "llm"), "quiet please")
    assert answer_of(messages) == "QUIET PLEASE"


async def stopped(proc: asyncio.subprocess.Process) -> None:
    """Stop a child process with SIGTERM: it must exit cleanly."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
