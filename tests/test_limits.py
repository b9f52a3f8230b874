"""Shared rate limits with no limiter process: the swarm's observed rate stays within a limit set
on the board, a full window makes agents wait (not spin, not count an attempt), and a
``RateLimited`` from one agent's provider holds every agent back until its ``retry_after``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    InvalidTask,
    LimitNotFound,
    RateLimited,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    Throttle,
)
from ants_nats.models import RateSlot, RateWindow

from .helpers import EventDict, log_spy, on_log
from .test_cli import run_cli


def _max_in_window(starts: list[float], width: float) -> int:
    """The most starts in any interval of ``width`` seconds."""
    starts = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


async def test_eight_agents_stay_within_a_shared_limit(board: TaskBoard) -> None:
    limit, per, tasks = 30, 1.5, 70  # "30 a minute", scaled down in time
    await board.set_limit("llm", requests=limit, per=per)
    starts: list[float] = []

    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        starts.append(time.time())
        return None

    async with AsyncExitStack() as stack:
        for i in range(8):
            agent = Agent(board, name=f"llm{i}", capabilities=["llm"], capacity=2)
            agent.handler("chat")(handle)
            await stack.enter_async_context(agent)
        records = await board.submit_many(
            [Task(id=f"c{i}", kind="chat", requires=["llm"]) for i in range(tasks)]
        )
        final = await board.wait([r.task.id for r in records], timeout=60)
    assert all(r.status is TaskStatus.DONE for r in final.values())
    assert len(starts) == tasks
    # Within the limit in every interval (a little shorter than ``per``: a start follows its take
    # by a claim, which on a loaded machine may bunch starts that the window kept apart). Without
    # the limit all 70 start within a fraction of a second; a fixed window would let 60 through at
    # a boundary.
    assert _max_in_window(starts, per - 0.25) <= limit
    # ... and the limit was what paced the work: 70 tasks need three windows' worth.
    assert max(starts) - min(starts) >= 2 * per * 0.9
    # Waiting for room is not an attempt.
    assert all(r.counted_attempts == 0 for r in final.values())


async def test_a_token_limit_holds_work_back_once_reported_tokens_fill_it(board: TaskBoard) -> None:
    await board.set_limit("llm", tokens=100, per=60)
    ran: list[str] = []
    agent = Agent(board, name="spender", capabilities=["llm"])

    @agent.handler("chat")
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        ran.append(task.id)
        ctx.usage(tokens_in=50, tokens_out=10)
        return None

    with on_log("limit.full") as full:
        async with agent:
            await board.submit_many([Task(id=f"t{i}", kind="chat", requires=["llm"]) for i in range(3)])
            await asyncio.wait_for(full.wait(), 20)
            # 60 tokens, then 120: the window is full after two, and the third waits its turn.
            assert len(ran) == 2
            left = [r for r in await board.all_tasks() if r.status is TaskStatus.PENDING]
            assert len(left) == 1 and left[0].attempts == ()


@contextmanager
def heard_by(agents: int) -> Iterator[asyncio.Event]:
    """Set once ``agents`` distinct agents have logged hearing a hold (their own included)."""
    heard: set[str] = set()
    everyone = asyncio.Event()

    def hold_heard(event_dict: EventDict) -> None:
        if event_dict.get("event") == "limit.hold_heard":
            heard.add(str(event_dict.get("agent")))
            if len(heard) >= agents:
                everyone.set()

    with log_spy(hold_heard):
        yield everyone


async def test_a_provider_limit_met_by_one_agent_holds_back_all(board: TaskBoard) -> None:
    retry_after = 1.5
    starts: dict[str, float] = {}
    limited_at: list[float] = []

    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        if not limited_at:
            limited_at.append(time.time())
            raise RateLimited("429 from the provider", retry_after=retry_after)
        starts[task.id] = time.time()
        return None

    with heard_by(4) as everyone:
        async with AsyncExitStack() as stack:
            for i in range(4):
                agent = Agent(board, name=f"llm{i}", capabilities=["llm"])
                agent.handler("chat")(handle)
                await stack.enter_async_context(agent)
            await board.submit(Task(id="first", kind="chat", requires=["llm"]))
            await asyncio.wait_for(everyone.wait(), 10)  # every agent has heard the mark
            await board.submit_many([Task(id=f"next{i}", kind="chat", requires=["llm"]) for i in range(6)])
            final = await board.wait(["first", *(f"next{i}" for i in range(6))], timeout=30)
    assert all(r.status is TaskStatus.DONE for r in final.values())
    # Nobody started work of the held capability before the provider's retry_after.
    assert min(starts.values()) >= limited_at[0] + retry_after - 0.05
    first = final["first"]
    assert first.counted_attempts == 0
    assert first.attempts[0].outcome == "released" and "429 from the provider" in (
        first.attempts[0].error or ""
    )
    marks = await board.trail.replay("ants.trail.mark.rate.held.llm.*")
    assert len(marks) == 1 and isinstance(marks[0].data, dict) and marks[0].data["reason"].startswith("429")


async def test_limits_are_validated_listed_and_removed(board: TaskBoard) -> None:
    with pytest.raises(InvalidTask, match="requests and/or tokens"):
        await board.set_limit("llm")
    with pytest.raises(InvalidTask, match="invalid limit"):
        await board.set_limit("LLM!", requests=3)
    with pytest.raises(LimitNotFound):
        await board.remove_limit("llm")
    await board.set_limit("llm", requests=60, tokens=100_000)
    assert [(x.capability, x.requests, x.tokens, x.per) for x in await board.limits()] == [
        ("llm", 60, 100_000, 60.0)
    ]
    await board.remove_limit("llm")
    assert await board.limits() == []


async def test_the_limit_commands(nats_server: EmbeddedServer) -> None:
    url = nats_server.url
    async with TaskBoard.connect(url) as board:
        await board.all_tasks()

    async def cli(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(run_cli, "limit", *args, "--server", url)
        return done.returncode, done.stdout, done.stderr

    code, out, _ = await cli("set", "llm", "--per-minute", "60", "--tokens-per-minute", "100000")
    assert code == 0 and "llm" in out
    code, out, _ = await cli("ls", "--json")
    (listed,) = json.loads(out)
    assert code == 0 and (listed["capability"], listed["requests"], listed["tokens"], listed["per"]) == (
        "llm",
        60,
        100000,
        60.0,
    )
    code, _, err = await cli("set", "llm")
    assert code == 2 and "requests and/or tokens" in err and "Traceback" not in err
    code, _, _ = await cli("rm", "llm")
    assert code == 0
    code, _, err = await cli("rm", "llm")
    assert code == 2 and "no limit is set on 'llm'" in err


def test_a_retry_after_is_kept_between_a_second_and_an_hour() -> None:
    assert RateLimited(retry_after=0).retry_after == 1.0  # a swarm retrying at once would spin
    assert RateLimited(retry_after=float("nan")).retry_after == 3600.0
    assert RateLimited(retry_after=10**9).retry_after == 3600.0
    assert "retry after 30s" in str(RateLimited("429", retry_after=30))


async def test_a_slot_from_the_far_future_does_not_shut_the_window(board: TaskBoard) -> None:
    limit = await board.set_limit("llm", requests=5, per=60)
    far = RateWindow(slots=(RateSlot(n=int(time.time() / 3) + 10_000, requests=1_000_000),))
    await board.nc.jetstream().publish("$KV.ants_rates.llm", far.model_dump_json().encode())
    wait, _ = await board.rates.reserve(limit)
    assert wait == 0.0  # reserved: the forged slot is dropped


async def test_a_look_at_the_room_left_reserves_nothing(board: TaskBoard) -> None:
    limit = await board.set_limit("look", requests=2, per=60)
    assert await board.rates.room(limit) == 0.0
    assert await board.rates.room(limit) == 0.0
    for _ in range(2):
        assert (await board.rates.reserve(limit))[0] == 0.0
    wait = await board.rates.room(limit)
    assert 0.0 < wait <= 63.0 and (await board.rates.reserve(limit))[0] > 0.0  # a slot over the interval


async def test_a_request_whose_work_does_not_start_is_refunded(board: TaskBoard) -> None:
    await board.set_limit("a", requests=1, per=60)
    await board.set_limit("b", requests=1, per=60)
    async with Throttle(board, "taker") as throttle:
        first = await throttle.reserve(["a"])
        assert first.wait == 0.0 and (await throttle.reserve(["a"])).wait > 0  # a's one request is out
        await throttle.refund(first)  # e.g. the claim lost to another agent
        async with Throttle(board, "other") as other:
            assert (await other.reserve(["a"])).wait == 0.0  # back, for anyone
        # Work needing two limited capabilities, the second full: the first gets its request back.
        with on_log("limit.heard") as heard:  # the one throttle open now learns of the new limit
            await board.set_limit("c", requests=1, per=60)
            await asyncio.wait_for(heard.wait(), 10)
        assert (await throttle.reserve(["b"])).wait == 0.0
        assert (await throttle.reserve(["c", "b"])).wait > 0
        async with Throttle(board, "third") as third:
            assert (await third.reserve(["c"])).wait == 0.0
