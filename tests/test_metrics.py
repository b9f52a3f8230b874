"""Metrics: an agent's Prometheus counters (served on 127.0.0.1 with its lifecycle), its real work
in ``nats micro stats``, and the dashboard's swarm-wide gauges on ``/metrics``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import JsonValue

from ants_nats import Agent, Decline, NonRetryable, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.cards import CardChange
from ants_nats.dashboard import Dashboard, SwarmState
from ants_nats.dashboard.state import QueueDepth
from ants_nats.metrics import SwarmCollector
from ants_nats.models import AgentCard, TaskRecord
from ants_nats.names import MICRO_SERVICE_NAME

from .helpers import until_event

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[str, Samples]:
    """The content type and every sample at ``url``, by name and sorted labels."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        text = await response.text()
        content_type = response.headers["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return content_type, samples


class Work:
    """Handlers with known outcomes: ``ok-*`` complete, ``bad-*`` fail for good, ``shy-*`` are
    declined once then completed, ``gate`` runs until ``release`` is set."""

    def __init__(self) -> None:
        self.declined: set[str] = set()
        self.gate_started = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, task: Task, ctx: TaskContext) -> JsonValue:
        if task.id.startswith("bad"):
            raise NonRetryable("no good")
        if task.id.startswith("shy") and task.id not in self.declined:
            self.declined.add(task.id)
            raise Decline("not now")
        if task.id == "gate":
            self.gate_started.set()
            await self.release.wait()
        return task.id


@asynccontextmanager
async def one_agent(board: TaskBoard, work: Work, metrics_port: int | None = None) -> AsyncIterator[Agent]:
    # Capacity 1: the agent takes a ticket only once the previous task is wholly settled (counted
    # included), so a task that starts tells the test every earlier one is counted.
    agent = Agent(
        board, name="meter", capabilities=["llm"], capacity=1, decline_backoff=0.05, metrics_port=metrics_port
    )
    agent.handler("job")(work.handle)
    async with agent:
        yield agent


def job(task_id: str) -> Task:
    return Task(id=task_id, kind="job", requires=("llm",), max_attempts=1)


async def test_an_agent_serves_its_counters_while_it_runs(board: TaskBoard) -> None:
    work = Work()
    async with one_agent(board, work, metrics_port=0) as agent:
        url = agent.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        await board.submit_many([job("ok-1"), job("ok-2"), job("bad-1"), job("shy-1")])
        # The only agent declined shy-1: it waits, unroutable, until the agent takes that back.
        await until_event(board, "task.unroutable", "shy-1")
        assert await agent.forget_declines() == ["shy-1"]
        final = await board.wait(["ok-1", "ok-2", "bad-1", "shy-1"], timeout=20)
        assert final["bad-1"].status is TaskStatus.FAILED
        await board.submit(job("gate"))
        await work.gate_started.wait()
        content_type, samples = await scrape(url)
        work.release.set()
    llm = (("capability", "llm"),)
    assert content_type.startswith("text/plain")
    assert samples["ants_agent_tasks_claimed_total", llm] == 6  # shy-1 twice, the gate once
    assert samples["ants_agent_tasks_completed_total", llm] == 3
    assert samples["ants_agent_tasks_failed_total", llm] == 1
    assert samples["ants_agent_tasks_declined_total", llm] == 1
    assert samples["ants_agent_tasks_in_flight", ()] == 1  # the gate
    assert samples["ants_agent_capacity", ()] == 1
    assert samples["ants_agent_heartbeat_failures_total", ()] == 0
    assert samples["ants_agent_handler_duration_seconds_count", (("kind", "job"),)] == 5
    info = next(labels for name, labels in samples if name == "ants_agent_info")
    assert ("agent_id", agent.id) in info
    # The server lives and dies with the agent.
    assert agent.metrics_url is None
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(url)
    # Settled after the scrape: the gate's completion is counted too.
    assert agent.metrics.value("ants_agent_tasks_completed_total", capability="llm") == 4
    assert agent.metrics.value("ants_agent_tasks_in_flight") == 0


async def test_agents_in_one_process_keep_separate_registries(board: TaskBoard) -> None:
    first, second = Work(), Work()
    async with one_agent(board, first, metrics_port=0) as a, one_agent(board, second, metrics_port=0) as b:
        assert a.metrics_url != b.metrics_url
        _, samples_a = await scrape(str(a.metrics_url))
        _, samples_b = await scrape(str(b.metrics_url))
    ids = [
        dict(labels)["agent_id"]
        for samples in (samples_a, samples_b)
        for name, labels in samples
        if name == "ants_agent_info"
    ]
    assert ids == [a.id, b.id]


async def test_a_taken_port_fails_the_start_and_leaves_nothing_running(board: TaskBoard) -> None:
    async with one_agent(board, Work(), metrics_port=0) as holder:
        port = int(str(holder.metrics_url).rsplit(":", 1)[1].split("/")[0])
        agent = Agent(board, name="late", capabilities=["llm"], metrics_port=port)
        with pytest.raises(OSError):
            await agent.__aenter__()
        assert agent.load == 0 and agent.metrics_url is None
        assert [c.id for c in await board.directory.cards()] == [holder.id]  # its card was withdrawn


async def test_a_cancelled_task_is_counted(board: TaskBoard) -> None:
    work = Work()
    async with one_agent(board, work) as agent:
        await board.submit(Task(id="gate", kind="job", requires=("llm",)))
        await work.gate_started.wait()
        await board.cancel("gate", "changed my mind")
    # The agent's exit waited for the runner, which counted the cancel before it ended.
    assert agent.metrics.value("ants_agent_tasks_cancelled_total", capability="llm") == 1
    assert agent.metrics.value("ants_agent_tasks_completed_total", capability="llm") == 0


async def test_micro_stats_show_the_agents_work(board: TaskBoard) -> None:
    work = Work()
    async with one_agent(board, work) as agent:
        await board.submit_many([job("ok-1"), job("bad-1")])
        await board.wait(["ok-1", "bad-1"], timeout=20)
        await board.submit(job("gate"))
        await work.gate_started.wait()  # ok-1 and bad-1 are wholly settled
        reply = await board.nc.request(f"$SRV.STATS.{MICRO_SERVICE_NAME}", b"", timeout=5)
        info = await board.nc.request(f"$SRV.INFO.{MICRO_SERVICE_NAME}", b"", timeout=5)
        direct = await board.nc.request(f"ants.agent.{agent.id}.work", b"", timeout=5)
        work.release.set()
    stats = json.loads(reply.data)
    assert stats["metadata"]["agent_id"] == agent.id
    endpoints = {e["name"]: e for e in stats["endpoints"]}
    assert endpoints["work"]["num_requests"] == 2
    assert endpoints["work"]["num_errors"] == 1
    assert "NonRetryable" in endpoints["work"]["last_error"]
    assert endpoints["work"]["processing_time"] > 0
    assert endpoints["work"]["average_processing_time"] == endpoints["work"]["processing_time"] // 2
    assert endpoints["card"]["num_requests"] == 0  # card look-ups are counted apart
    described = json.loads(info.data)
    assert {e["name"] for e in described["endpoints"]} == {"card", "work"}
    assert all(isinstance(e["metadata"], dict) and e["metadata"] for e in described["endpoints"])
    answer = json.loads(direct.data)
    assert (answer["served"], answer["errors"]) == (2, 1)
    assert answer["outcomes"] == {"completed": 1, "failed": 1}


def _card(agent_id: str, load: int) -> AgentCard:
    return AgentCard(id=agent_id, name=agent_id, load=load, capacity=4, software="test")


def _record(task_id: str, status: TaskStatus, unroutable: tuple[str, ...] | None = None) -> TaskRecord:
    return TaskRecord(
        task=Task(id=task_id, kind="job", requires=("llm",)), status=status, unroutable=unroutable
    )


def test_the_swarm_collector_reads_the_dashboard_model() -> None:
    state = SwarmState()
    for record in [
        _record("a", TaskStatus.DONE),
        _record("b", TaskStatus.DONE),
        _record("c", TaskStatus.PENDING, unroutable=("gpu",)),
        _record("d", TaskStatus.CLAIMED),
    ]:
        state.on_record(record)
    state.on_card(CardChange(kind="joined", agent_id="x", card=_card("x", 1)))
    state.on_card(CardChange(kind="joined", agent_id="y", card=_card("y", 2)))
    state.on_queues({"llm": QueueDepth(pending=3, in_flight=1, express_pending=2)})
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in SwarmCollector(state).collect()
        for s in family.samples
    }
    assert samples["ants_swarm_tasks", (("status", "done"),)] == 2
    assert samples["ants_swarm_tasks", (("status", "pending"),)] == 1
    assert samples["ants_swarm_tasks_unroutable", ()] == 1
    assert samples["ants_swarm_queue_pending", (("lane", "normal"), ("route", "llm"))] == 3
    assert samples["ants_swarm_queue_pending", (("lane", "express"), ("route", "llm"))] == 2
    assert samples["ants_swarm_queue_in_flight", (("lane", "normal"), ("route", "llm"))] == 1
    assert samples["ants_swarm_agents", ()] == 2
    assert samples["ants_swarm_agent_load", ()] == 3
    assert samples["ants_swarm_agent_capacity", ()] == 8
    state.on_card(CardChange(kind="left", agent_id="x", card=None))
    after = {s.name: s.value for family in SwarmCollector(state).collect() for s in family.samples}
    assert after["ants_swarm_agents"] == 1


async def test_the_dashboard_serves_swarm_gauges(board: TaskBoard) -> None:
    async with Dashboard(board, port=0) as dashboard:
        # The feeds see an empty board; the model is set directly to know what to expect.
        dashboard.state.on_record(_record("p", TaskStatus.PENDING))
        dashboard.state.on_card(CardChange(kind="joined", agent_id="x", card=_card("x", 0)))
        content_type, samples = await scrape(dashboard.url + "metrics")
    assert content_type.startswith("text/plain")
    assert samples["ants_swarm_tasks", (("status", "pending"),)] == 1
    assert samples["ants_swarm_agents", ()] == 1
