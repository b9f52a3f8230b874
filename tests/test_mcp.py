"""``ants-nats mcp``: the board served to MCP clients, driven by the official SDK's client over
stdio (the server as a child process) and Streamable HTTP (the server in this process)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent, TextResourceContents
from pydantic import JsonValue

from ants_nats import Agent, EmbeddedServer, Task, TaskBoard, TaskContext, TaskStatus, TrailEvent
from ants_nats.mcp._server import McpHost

from .conftest import TEST_LEASE_TTL
from .helpers import until_event

ROOT = Path(__file__).parents[1]
WAIT_S = 15.0


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call ``tool``; its structured result (a list comes back under ``result``)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    content = result.structured_content
    assert content is not None
    return content.get("result", content) if set(content) == {"result"} else content


async def tool_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call ``tool``, which must fail; the message the model reads."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return text_of(result)


async def read_json(client: Client, uri: str) -> Any:
    contents = (await client.read_resource(uri)).contents
    assert isinstance(contents[0], TextResourceContents)
    return json.loads(contents[0].text)


async def heartbeats(board: TaskBoard, task_id: str, span: float) -> list[TrailEvent]:
    """Heartbeat events of ``task_id`` from the first, until they cover more than ``span`` seconds."""
    beats: list[TrailEvent] = []
    async with aclosing(board.trail.follow(f"ants.trail.task.heartbeat.{task_id}.*")) as events:
        async for event in events:
            beats.append(event)
            if (event.at - beats[0].at).total_seconds() > span:
                return beats
    raise AssertionError("follow ended")


@asynccontextmanager
async def stdio_client(url: str, *args: str) -> AsyncIterator[Client]:
    """An MCP client of ``ants-nats mcp`` run as a child process on stdio."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ants_nats.cli", "mcp", "--server", url, "--lease-ttl", str(TEST_LEASE_TTL), *args],
        cwd=ROOT,
    )
    async with Client(params, read_timeout_seconds=WAIT_S * 2) as client:
        yield client


@asynccontextmanager
async def http_client(host: McpHost) -> AsyncIterator[Client]:
    """An MCP client of ``host`` served over Streamable HTTP on a free loopback port."""
    with socket.socket() as sock:
        # Bound and listening before the server starts: the client's first connection waits in
        # the backlog instead of racing the server's start.
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        serving = asyncio.create_task(host.serve_http(sock=sock, stop=stop))
        try:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=WAIT_S * 2) as client:
                yield client
        finally:
            stop.set()
            await asyncio.wait_for(serving, WAIT_S)


async def test_stdio_a_model_submits_claims_and_completes_while_its_lease_is_kept(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with stdio_client(nats_server.url, "--cap", "llm", "--name", "model") as client:
        submitted = await call(
            client,
            "submit_tasks",
            tasks=[{"id": "sum-1", "kind": "summarise", "requires": ["llm"], "payload": {"text": "ants"}}],
        )
        assert [(t["id"], t["status"]) for t in submitted] == [("sum-1", "pending")]

        claimed = await call(client, "claim_next", timeout=WAIT_S)
        work = claimed["task"]
        assert (work["task_id"], work["kind"], work["payload"]) == ("sum-1", "summarise", {"text": "ants"})

        # The model "thinks" for longer than a lease lives: the server heartbeats it meanwhile.
        beats = await asyncio.wait_for(heartbeats(board, "sum-1", TEST_LEASE_TTL), WAIT_S)
        record = await board.get("sum-1")
        agent_id = beats[-1].agent
        assert record.status is TaskStatus.CLAIMED and record.holder == agent_id
        assert agent_id is not None and agent_id.startswith("model-")

        await call(client, "report_progress", task_id="sum-1", fraction=0.5, note="halfway")
        progress = await asyncio.wait_for(until_event(board, "task.progress", "sum-1"), WAIT_S)
        assert progress.agent == agent_id

        settled = await call(client, "complete_task", task_id="sum-1", result={"summary": "small"})
        assert (settled["status"], settled["outcome"]) == ("done", "completed")

        final = (await board.wait(["sum-1"], timeout=WAIT_S))["sum-1"]
        assert final.status is TaskStatus.DONE and final.result == {"summary": "small"}
        assert [a.agent for a in final.attempts] == [agent_id]

        agents = await call(client, "find_agents", requires=["llm"])
        assert [(a["id"], a["capabilities"]) for a in agents] == [(agent_id, ["llm"])]
        assert agent_id in [card["id"] for card in await read_json(client, "ants://agents")]

        # A bad id is the board's own one-line message, never a traceback.
        message = await tool_error(client, "get_task", task_id="no such id!")
        assert "invalid task id 'no such id!'" in message
        assert "Traceback" not in message
        message = await tool_error(client, "get_task", task_id="ghost")
        assert "no task 'ghost' on the board" in message


async def test_stdio_marks_are_laid_and_read_back(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    async with stdio_client(nats_server.url) as client:
        laid = await call(client, "lay_mark", name="food.found", key="pile-7", data={"crumbs": 3})
        await call(client, "lay_mark", name="food.found", key="pile-7", intensity=2.0)
        await call(client, "lay_mark", name="danger", key="river")
        assert laid["seq"] is not None

        marks = await call(client, "read_marks", name="food")
        assert [(m["name"], m["key"], m["deposits"]) for m in marks] == [("food.found", "pile-7", 2)]
        assert 2.9 < marks[0]["strength"] <= 3.0
        assert marks[0]["data"] is None  # the latest deposit's data
        everything = await call(client, "read_marks")
        assert {m["name"] for m in everything} == {"food.found", "danger"}
        # What another agent sees on the trail is the same mark.
        scents = await board.trail.strongest("ants.trail.mark.food.>")
        assert [(s.key, s.deposits) for s in scents] == [("pile-7", 2)]

        assert "invalid mark name 'Food Found'" in await tool_error(client, "read_marks", name="Food Found")
        assert "invalid mark name" in await tool_error(client, "lay_mark", name="bad name", key="k")
        # Without capabilities the server hosts no agent, and says how to get one.
        assert "--cap" in await tool_error(client, "claim_next", timeout=0)


async def test_http_a_model_works_a_dag_declines_and_waits(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        McpHost(nats_server.url, name="web", capabilities=["llm", "web"], lease_ttl=TEST_LEASE_TTL) as host,
        http_client(host) as client,
    ):
        tasks = [
            {"id": "fetch", "kind": "fetch", "requires": ["web"], "payload": "https://example.org"},
            {"id": "digest", "kind": "digest", "requires": ["llm"], "depends_on": ["fetch"]},
        ]
        submitted = await call(client, "submit_tasks", tasks=tasks)
        assert [t["waiting_on"] for t in submitted] == [[], ["fetch"]]
        summary = await read_json(client, "ants://board")
        # (The hosted agent may have claimed fetch already: it holds it for the model.)
        assert summary["tasks"] == 2 and summary["by_status"] in (
            {"pending": 2},
            {"pending": 1, "claimed": 1},
        )

        first = (await call(client, "claim_next", timeout=WAIT_S))["task"]
        assert (first["task_id"], first["payload"]) == ("fetch", "https://example.org")
        await call(client, "complete_task", task_id="fetch", result="<html>")
        message = await tool_error(client, "complete_task", task_id="fetch", result="again")
        assert "you hold no task 'fetch'" in message

        second = (await call(client, "claim_next", timeout=WAIT_S))["task"]
        assert second["task_id"] == "digest"
        assert second["dependency_results"] == {"fetch": "<html>"}
        declined = await call(client, "decline_task", task_id="digest", reason="need a bigger model")
        assert (declined["status"], declined["outcome"]) == ("pending", "declined")

        # Declined by the only agent able to take it, it waits, saying why, and is not offered
        # to the model again ...
        record = await board.get("digest")
        assert record.unroutable_reason == (
            f"declined by every live agent able to take it ({host.agent_id}: need a bigger model)"
        )
        assert (await call(client, "claim_next", timeout=0))["task"] is None
        shown = await call(client, "get_task", task_id="digest")
        assert shown["unroutable_reason"] == record.unroutable_reason
        assert (shown["waiting"]["reason"], shown["waiting"]["agents"]) == ("declined", [host.agent_id])
        (listed,) = [t for t in await call(client, "list_tasks", status="pending") if t["id"] == "digest"]
        assert listed["waiting"] == shown["waiting"]

        # ... until an agent comes that can take it: a bigger model.
        async def bigger_model(task: Task, ctx: TaskContext) -> JsonValue:
            return {"words": 1}

        bigger = Agent(board, name="bigger", capabilities=["llm"])
        bigger.handler("digest")(bigger_model)
        async with bigger:
            final = await call(client, "wait_for_tasks", task_ids=["fetch", "digest"], timeout=WAIT_S)
        assert [(t["id"], t["status"], t["result"]) for t in final] == [
            ("fetch", "done", "<html>"),
            ("digest", "done", {"words": 1}),
        ]
        record = await board.get("digest")
        assert [(a.agent, a.outcome) for a in record.attempts] == [(bigger.id, "completed")]
        assert [(d.agent, d.reason, d.count) for d in record.declines] == [
            (host.agent_id, "need a bigger model", 1)
        ]

        assert (await call(client, "claim_next", timeout=0))["task"] is None
        listed = await call(client, "list_tasks", status="done")
        assert {t["id"] for t in listed} == {"fetch", "digest"}
        # A listed task shows the result get_task shows.
        for task in listed:
            assert task["result"] is not None
            assert task["result"] == (await call(client, "get_task", task_id=task["id"]))["result"]


async def test_http_tool_errors_are_clear_messages(board: TaskBoard, nats_server: EmbeddedServer) -> None:
    async with McpHost(nats_server.url) as host, http_client(host) as client:
        await call(client, "submit_tasks", tasks=[{"id": "a", "kind": "echo"}])
        cycle = await tool_error(
            client, "submit_tasks", tasks=[{"id": "b", "kind": "echo", "depends_on": ["nowhere"]}]
        )
        assert "nowhere" in cycle and "Traceback" not in cycle
        taken = await tool_error(client, "submit_tasks", tasks=[{"id": "a", "kind": "other"}])
        assert "'a'" in taken
        late = await tool_error(client, "wait_for_tasks", task_ids=["a"], timeout=0.2)
        assert "not finished within 0.2s: a is pending (ready, waiting for an agent: none is live)" in late
        with_bad_kind = await tool_error(client, "submit_tasks", tasks=[{"id": "c", "kind": "Not A Kind"}])
        assert "kind" in with_bad_kind
        negative = await tool_error(client, "wait_for_tasks", task_ids=["a"], timeout=-1)
        assert "timeout" in negative and "greater than or equal to 0" in negative
        assert "Traceback" not in negative
        # A rejected batch wrote nothing.
        assert [r.task.id for r in await board.all_tasks()] == ["a"]


async def test_shutdown_releases_what_the_model_left_unsettled(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        McpHost(nats_server.url, name="quitter", capabilities=["llm"], lease_ttl=TEST_LEASE_TTL) as host,
        http_client(host) as client,
    ):
        await call(client, "submit_tasks", tasks=[{"id": "left", "kind": "think", "requires": ["llm"]}])
        assert (await call(client, "claim_next", timeout=WAIT_S))["task"]["task_id"] == "left"
    # Released on the way out, not left to expire: pending again, for any other agent.
    record = await board.get("left")
    assert record.status is TaskStatus.PENDING and record.holder is None
    assert [a.outcome for a in record.attempts] == ["released"]


async def test_a_task_nobody_picks_up_is_declined_for_others(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        McpHost(
            nats_server.url, name="idle", capabilities=["llm"], lease_ttl=TEST_LEASE_TTL, pickup_timeout=1.0
        ) as host,
        Client(host.server()) as client,
    ):
        await board.submit({"id": "unwatched", "kind": "think", "requires": ["llm"]})
        unroutable = await asyncio.wait_for(until_event(board, "task.unroutable", "unwatched"), WAIT_S)
        record = await board.get("unwatched")
        assert record.status is TaskStatus.PENDING and record.attempts == ()
        assert [(d.agent, d.reason) for d in record.declines] == [
            (host.agent_id, "not picked up by the model within 1s")
        ]
        assert unroutable.data is not None and "not picked up by the model" in str(unroutable.data)
        # The model asks again: the decline is taken back and the task comes to it.
        again = (await call(client, "claim_next", timeout=WAIT_S))["task"]
        assert again["task_id"] == "unwatched"
        await call(client, "complete_task", task_id="unwatched", result="thought")
    record = await board.get("unwatched")
    assert record.status is TaskStatus.DONE and record.declines == ()


async def test_failing_a_task_for_good_blocks_its_dependents(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        McpHost(nats_server.url, name="critic", capabilities=["llm"], lease_ttl=TEST_LEASE_TTL) as host,
        Client(host.server()) as client,  # in memory: the tools are the same over every transport
    ):
        tasks = [
            {"id": "draft", "kind": "write", "requires": ["llm"], "timeout": 60},
            {"id": "edit", "kind": "write", "requires": ["llm"], "depends_on": ["draft"]},
        ]
        await call(client, "submit_tasks", tasks=tasks)
        work = (await call(client, "claim_next", timeout=WAIT_S))["task"]
        assert work["task_id"] == "draft" and 0 < work["settle_within"] <= 60

        settled = await call(client, "fail_task", task_id="draft", error="no ink", retry=False)
        assert (settled["status"], settled["outcome"]) == ("failed", "failed")
        final = await call(client, "wait_for_tasks", task_ids=["draft", "edit"], timeout=WAIT_S)
        assert [(t["id"], t["status"]) for t in final] == [("draft", "failed"), ("edit", "failed")]
        assert final[0]["error"] == "NonRetryable: no ink"
        assert "draft" in final[1]["error"]
        assert "you hold no task 'edit'" in await tool_error(
            client, "report_progress", task_id="edit", fraction=1
        )


async def test_tasks_of_any_kind_from_other_submitters_reach_the_model(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    async with (
        McpHost(nats_server.url, name="generalist", capabilities=["llm"], lease_ttl=TEST_LEASE_TTL) as host,
        Client(host.server()) as client,
    ):
        # Submitted by someone else, of a kind this server never heard of: it learns it from the board.
        await board.submit({"id": "poem", "kind": "versify", "requires": ["llm"], "payload": "ants"})
        work = (await call(client, "claim_next", timeout=WAIT_S))["task"]
        assert (work["task_id"], work["kind"]) == ("poem", "versify")
        await call(client, "complete_task", task_id="poem", result="six legs")
        assert await board.result("poem", timeout=WAIT_S) == "six legs"


async def test_http_a_model_answers_the_question_a_task_waits_on(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    agent = Agent(board, name="asker")

    @agent.handler("plan")
    async def plan(task: Task, ctx: TaskContext) -> JsonValue:
        return {"region": await ctx.ask("Which region?")}

    async with agent, McpHost(nats_server.url) as host, http_client(host) as client:
        await call(client, "submit_tasks", tasks=[{"id": "trip", "kind": "plan"}])
        await until_event(board, "task.asked", "trip")
        waiting = await call(client, "get_task", task_id="trip")
        assert (waiting["status"], waiting["question"]) == ("waiting_input", "Which region?")
        wrong = await tool_error(client, "answer_task", task_id="nope", answer="x")
        assert "nope" in wrong and "Traceback" not in wrong
        await call(client, "answer_task", task_id="trip", answer="eu-west")
        (done,) = await call(client, "wait_for_tasks", task_ids=["trip"])
    assert done["result"] == {"region": "eu-west"}
    assert (await board.get("trip")).questions[0].answered_by == "mcp-" + host.name
