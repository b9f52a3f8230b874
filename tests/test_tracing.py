"""Tracing: the submitter's trace context travels inside the task; claim, handler and completion are
spans of that trace on whichever agent works; a DAG is one trace; without OpenTelemetry nothing
changes. Spans are read from the SDK's in-memory exporter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import JsonValue

from ants_nats import Agent, Handler, NonRetryable, Task, TaskBoard, TaskContext, TaskStatus, tracing
from ants_nats.models import wire_bytes

pytestmark = pytest.mark.skipif(
    "trace" not in Task.model_fields, reason="needs the Task.trace field (the models.py change)"
)


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """An SDK tracer provider of the test's own, given to ants-nats (the global one is left alone,
    so other test modules run untraced)."""
    provider = TracerProvider()
    tracing.set_tracer_provider(provider)
    try:
        yield provider
    finally:
        tracing.set_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def spans(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def handler_of(provider: TracerProvider) -> Handler:
    async def handle(task: Task, ctx: TaskContext) -> JsonValue:
        # A span the handler makes itself belongs under the runtime's handler span.
        with provider.get_tracer("handler").start_as_current_span(f"inner {task.id}"):
            if task.id.startswith("bad"):
                raise NonRetryable("broken")
            return task.id

    return handle


@asynccontextmanager
async def agents(
    board: TaskBoard, provider: TracerProvider, *capabilities: str
) -> AsyncIterator[list[Agent]]:
    """One agent per capability; they have stopped (every attempt span ended) after the block."""
    async with AsyncExitStack() as stack:
        started = []
        for capability in capabilities:
            agent = Agent(board, name=f"tracer-{capability}", capabilities=[capability])
            agent.handler("step")(handler_of(provider))
            started.append(await stack.enter_async_context(agent))
        yield started


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def task_of(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("ants.task.id")


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


async def test_one_submission_is_one_trace_across_agents(
    board: TaskBoard, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    dag = [
        Task(id="fetch", kind="step", requires=("net",)),
        Task(id="parse", kind="step", requires=("cpu",), depends_on=("fetch",)),
    ]
    async with agents(board, provider, "net", "cpu") as (net, cpu):
        with provider.get_tracer("client").start_as_current_span("client") as client:
            await board.submit_many(dag)
        final = await board.wait(["fetch", "parse"], timeout=20)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    root = client.get_span_context()

    (submit,) = named(spans, "ants.submit")
    assert submit.kind is SpanKind.PRODUCER and parent_id(submit) == root.span_id
    # version, trace id, parent span id (the submission's), flags (sampled, whatever else)
    carried = {tuple(str(r.task.trace).split("-")[:3]) for r in final.values()}
    assert carried == {("00", f"{root.trace_id:032x}", f"{span_id(submit):016x}")}
    attempts = {task_of(s): s for s in named(spans, "ants.attempt")}
    assert set(attempts) == {"fetch", "parse"}
    assert (attempts["fetch"].attributes or {})["ants.agent.id"] == net.id
    assert (attempts["parse"].attributes or {})["ants.agent.id"] == cpu.id
    assert (attempts["parse"].attributes or {})["ants.task.depends_on"] == ("fetch",)
    for attempt in attempts.values():
        assert trace_id(attempt) == root.trace_id  # one trace, whichever agent worked
        assert parent_id(attempt) == span_id(submit)
        assert attempt.kind is SpanKind.CONSUMER
        assert (attempt.attributes or {})["ants.outcome"] == "completed"
        children = {s.name: s for s in spans.get_finished_spans() if parent_id(s) == span_id(attempt)}
        assert set(children) == {"ants.claim", "ants.handler", "ants.complete"}
        handler = children["ants.handler"]
        (inner,) = [
            s
            for s in spans.get_finished_spans()
            if s.name.startswith("inner ") and parent_id(s) == span_id(handler)
        ]
        assert inner.name == f"inner {task_of(attempt)}"
        # The claim comes before the handler, which comes before the completion.
        claim, done = children["ants.claim"], children["ants.complete"]
        assert claim.end_time is not None and handler.start_time is not None
        assert claim.end_time <= handler.start_time
        assert handler.end_time is not None and done.start_time is not None
        assert handler.end_time <= done.start_time


async def test_a_failing_handler_is_an_error_of_its_trace(
    board: TaskBoard, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    async with agents(board, provider, "cpu"):
        await board.submit(Task(id="bad-one", kind="step", requires=("cpu",)))
        final = await board.wait(["bad-one"], timeout=20)
    assert final["bad-one"].status is TaskStatus.FAILED
    (attempt,) = named(spans, "ants.attempt")
    assert (attempt.attributes or {})["ants.outcome"] == "failed"
    assert attempt.status.status_code is StatusCode.ERROR
    (handler,) = named(spans, "ants.handler")
    assert handler.status.status_code is StatusCode.ERROR
    assert [e.name for e in handler.events] == ["exception"]
    (fail,) = named(spans, "ants.fail")
    assert parent_id(fail) == span_id(attempt)
    (submit,) = named(spans, "ants.submit")
    assert parent_id(submit) is None  # no span around the submit: the submission starts the trace
    assert trace_id(attempt) == trace_id(submit)


async def test_a_dag_submitted_in_parts_is_linked(
    board: TaskBoard, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    await board.submit(Task(id="first", kind="step", requires=("cpu",)))
    await board.submit(Task(id="second", kind="step", requires=("cpu",), depends_on=("first",)))
    first, second = named(spans, "ants.submit")
    assert trace_id(first) != trace_id(second)
    assert [(link.context.trace_id, link.context.span_id) for link in second.links] == [
        (trace_id(first), span_id(first))
    ]


async def test_a_resubmission_under_another_trace_is_the_same_task(
    board: TaskBoard, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    task = Task(id="again", kind="step", requires=("cpu",))
    (record,) = await board.submit_many([task])
    (again,) = await board.submit_many([task])  # a second submit span: a different traceparent
    assert again.task.trace == record.task.trace is not None
    assert len({trace_id(s) for s in named(spans, "ants.submit")}) == 2


async def test_without_opentelemetry_nothing_is_traced(
    board: TaskBoard, provider: TracerProvider, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_otel", lambda: None)  # as if the extra were not installed
    async with agents(board, provider, "cpu"):
        await board.submit(Task(id="plain", kind="step", requires=("cpu",)))
        final = await board.wait(["plain"], timeout=20)
    assert final["plain"].status is TaskStatus.DONE
    assert final["plain"].task.trace is None
    assert "trace" not in json.loads(wire_bytes(final["plain"]))["task"]  # not even as null
    assert [s.name for s in spans.get_finished_spans()] == ["inner plain"]  # the handler's own only


def test_importing_ants_nats_imports_no_opentelemetry() -> None:
    code = (
        "import sys, ants_nats, ants_nats.tracing, ants_nats.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_tracing_is_a_no_op() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # makes every opentelemetry import fail\n"
        "from ants_nats import Task, tracing\n"
        "task = Task(id='t', kind='k')\n"
        "with tracing.submitting() as s:\n"
        "    assert s.stamp([task]) == [task]\n"
        "assert tracing.attempt(task, 'a', started_ns=0) is tracing.NO_TRACE\n"
        "print(tracing.available(), tracing.traceparent())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False None"


def test_with_the_api_alone_no_span_is_made() -> None:
    # OpenTelemetry's API without a provider records nothing: the hot path skips even no-op spans.
    task = Task(id="t", kind="k")
    assert tracing.available()
    with tracing.submitting() as submission:
        assert submission.traceparent is None
        assert submission.stamp([task]) == [task]
    assert tracing.attempt(task, "a", started_ns=0) is tracing.NO_TRACE
