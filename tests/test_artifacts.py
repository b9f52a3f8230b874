"""Large payloads, results and files: kept in the Object Store bucket ``ants_artifacts``, referred to
from the record, and resolved for whoever reads them (a handler, a dependent, the submitter)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import nats.js.errors
import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AntsError,
    ArtifactNotFound,
    ArtifactRef,
    BoardConfig,
    EmbeddedServer,
    Task,
    TaskBoard,
    TaskContext,
    TaskExists,
    TaskStatus,
)
from ants_nats.names import ARTIFACTS_BUCKET

from .conftest import fresh_board
from .test_services import first_event, service

_FIVE_MB = 5 * 1024 * 1024


def _big(seed: str) -> str:
    """5 MB of text that differs with ``seed`` (so equal sizes cannot hide a mix-up)."""
    block = hashlib.sha256(seed.encode()).hexdigest()
    return (block * (_FIVE_MB // len(block) + 1))[:_FIVE_MB]


async def test_a_5_mb_payload_and_result_round_trip_through_the_store(board: TaskBoard) -> None:
    payload, answer = {"text": _big("in")}, {"summary": _big("out")}
    seen: list[JsonValue] = []

    async def summarise(task: Task, ctx: TaskContext) -> JsonValue:
        seen.append(ctx.payload)
        return answer

    async def read_dependency(task: Task, ctx: TaskContext) -> JsonValue:
        results = await ctx.dependency_results()
        return {"length": len(str(results["big"]))}

    submitted = await board.submit(Task(id="big", kind="summarise", payload=payload))
    await board.submit(Task(id="after", kind="measure", depends_on=("big",)))
    # The record holds a reference, not 5 MB.
    assert submitted.task.payload is None and submitted.task.payload_ref is not None
    assert submitted.task.payload_ref.size > _FIVE_MB
    assert submitted.task.payload_ref.name.startswith("big/payload-")
    agent = Agent(board, name="reader")
    agent.handler("summarise")(summarise)
    agent.handler("measure")(read_dependency)
    async with agent:
        final = await board.wait(["big", "after"], timeout=60)
    assert seen == [payload]  # the handler saw the payload itself
    record = final["big"]
    assert record.status is TaskStatus.DONE and record.result is None and record.result_ref is not None
    assert await board.result("big") == answer
    assert final["after"].result == {"length": len(str(answer))}
    # Submitting the same task again is the same task (its artifact is named by its content), and
    # its stored payload is left as it is (a reader may be reading it).
    store = await board.nc.jetstream().object_store(ARTIFACTS_BUCKET)
    before = await store.get_info(submitted.task.payload_ref.name)
    again = await board.submit(Task(id="big", kind="summarise", payload=payload))
    assert again.task == submitted.task
    assert (await store.get_info(submitted.task.payload_ref.name)).nuid == before.nuid


async def test_a_handler_stores_a_file_and_returns_its_reference(board: TaskBoard, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_bytes(b"<h1>" + b"x" * 300_000 + b"</h1>")

    async def build(task: Task, ctx: TaskContext) -> JsonValue:
        ref = await ctx.put_artifact("report.html", report)
        return {"report": ref.model_dump()}

    agent = Agent(board, name="builder")
    agent.handler("build")(build)
    async with agent:
        await board.submit(Task(id="site", kind="build"))
        result = await board.result("site", timeout=30)
    assert isinstance(result, dict)
    ref = ArtifactRef.model_validate(result["report"])
    assert ref.name.startswith("site/") and ref.name.endswith("/report.html")
    assert await board.get_artifact(ref) == report.read_bytes()
    # Another client reads it with plain nats-py, as any NATS client could.
    store = await board.nc.jetstream().object_store(ARTIFACTS_BUCKET)
    assert (await store.get(ref.name)).data == report.read_bytes()
    with pytest.raises(ArtifactNotFound, match="expired"):
        await board.get_artifact(ref.model_copy(update={"name": "site/never-written"}))


async def test_artifacts_expire_with_the_buckets_ttl(nats_server: EmbeddedServer) -> None:
    async with fresh_board(nats_server.url, artifact_ttl=3600.0, inline_bytes=100) as board:
        record = await board.submit(Task(id="short-lived", kind="work", payload="x" * 1000))
        ref = record.task.payload_ref
        assert ref is not None
        assert len(await board.get_artifact(ref)) == 1002  # the JSON string, quotes included
        # The server removes every artifact artifact_ttl after it was written (the bucket's max age).
        store = await board.nc.jetstream().object_store(ARTIFACTS_BUCKET)
        assert (await store.status()).stream_info.config.max_age == 3600.0


async def test_the_deployer_publishes_an_artifact_that_exists_only_in_the_store(
    board: TaskBoard, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    ref = await board.artifacts.put("job-1/1-builder/site.html", b"<h1>from the store</h1>")
    missing = ref.model_copy(update={"name": "job-1/1-builder/gone.html"})
    publish = tmp_path / "public"
    async with service("deployer", "--server", nats_server.url, "--publish-dir", str(publish)):
        await board.trail.mark("artifact.written", key="site", data={"artifact": ref.model_dump()})
        await board.trail.mark("artifact.written", key="gone", data={"artifact": missing.model_dump()})
        deployed = await asyncio.wait_for(first_event(board, "ants.trail.mark.artifact.deployed.>"), 20)
        failed = await asyncio.wait_for(first_event(board, "ants.trail.mark.artifact.deploy_failed.>"), 20)
    assert deployed.ref == "site"
    assert (publish / "site.html").read_bytes() == b"<h1>from the store</h1>"
    assert failed.ref == "gone"
    assert isinstance(failed.data, dict) and "not in ants_artifacts" in str(failed.data["reason"])


def test_inline_limit_must_fit_the_payload_limit() -> None:
    with pytest.raises(AntsError, match="inline_bytes"):
        BoardConfig(inline_bytes=10, max_payload_bytes=5)


async def test_a_refused_submission_stores_no_payload(nats_server: EmbeddedServer) -> None:
    async with fresh_board(nats_server.url, inline_bytes=100) as board:
        # An unknown budget is refused before anything is stored: not even the store is made.
        with pytest.raises(AntsError, match="no budget 'nope'"):
            await board.submit(Task(id="b", kind="k", payload="x" * 1000, budget="nope"))
        with pytest.raises(nats.js.errors.NotFoundError):
            await board.nc.jetstream().stream_info(f"OBJ_{ARTIFACTS_BUCKET}")
        # Another definition under a taken id is refused before its payload is stored.
        await board.submit(Task(id="t", kind="k", payload="a" * 1000))
        store = await board.nc.jetstream().object_store(ARTIFACTS_BUCKET)
        before = sorted(info.name for info in await store.list())
        with pytest.raises(TaskExists):
            await board.submit(Task(id="t", kind="k", payload="b" * 1000))
        assert sorted(info.name for info in await store.list()) == before
        assert len(before) == 1 and before[0].startswith("t/payload-")
