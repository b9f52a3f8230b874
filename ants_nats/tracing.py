"""OpenTelemetry tracing of tasks, across agents (optional: the ``ants-nats[otel]`` extra).

A submission is a span (``ants.submit``, a child of whatever span the submitter is in); its W3C
``traceparent`` rides inside each task's spec (``Task.trace``), so it costs no message of its own.
Each attempt at a task is a span (``ants.attempt``) of that trace, with the claim (``ants.claim``),
the handler (``ants.handler``: spans the handler makes are its children) and the write of the
outcome (``ants.complete`` or ``ants.fail``) as its children. The tasks of a DAG submitted together
share the submission's trace; a task whose dependencies were submitted earlier links its submission
to theirs, so one submission shows as one trace across agents.

OpenTelemetry is imported on first use, never when ``ants_nats`` is imported; without it every
function here does nothing (``traceparent()`` is None, ``attempt()`` a no-op). With the API but no
SDK configured, spans are the API's non-recording ones and no task carries a trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .log import get_logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from .models import Task

log = get_logger("tracing")

TRACER_NAME = "ants_nats"
"""The instrumentation scope of every span ants-nats makes."""

_MAX_IDS = 32
"""Task ids listed on a submission span (a batch may hold thousands)."""


@dataclass(frozen=True)
class _Otel:
    trace: ModuleType
    context: ModuleType
    w3c: TraceContextTextMapPropagator

    def tracer(self) -> Any:
        # Asked each time, not cached: a program may install its tracer provider after importing us.
        return self.provider().get_tracer(TRACER_NAME, __version__)

    def provider(self) -> Any:
        """The provider ants-nats spans go to: the one ``set_tracer_provider`` gave, else the global."""
        return _provider[0] if _provider else self.trace.get_tracer_provider()

    def recording(self) -> bool:
        """Whether spans would go anywhere: an SDK (or other real) provider is installed. The API's
        own default records nothing, so the agent skips even no-op spans then (the hot path)."""
        provider = self.provider()
        return not isinstance(provider, self.trace.ProxyTracerProvider | self.trace.NoOpTracerProvider)

    def parent(self, traceparent: str | None) -> Context:
        """The context to start a span in: the remote one of ``traceparent``, or a fresh root."""
        return self.w3c.extract({"traceparent": traceparent} if traceparent else {}, context=_empty(self))


def _empty(otel: _Otel) -> Context:
    # An empty context, not the current one: an agent's work must not become a child of whatever
    # span happened to be current when its pull loop started.
    context: Context = otel.context.Context()
    return context


_provider: list[Any] = []
"""The tracer provider given to ``set_tracer_provider`` (at most one), else empty."""


def set_tracer_provider(provider: Any) -> None:
    """Send ants-nats spans to ``provider`` (an OpenTelemetry ``TracerProvider``) rather than the
    global one; None goes back to the global provider. For programs (and tests) that keep several
    providers, or do not want to set the process-wide one."""
    _provider.clear()
    if provider is not None:
        _provider.append(provider)


@cache
def _otel() -> _Otel | None:
    """The OpenTelemetry API, imported once on first use; None when it is not installed."""
    try:
        # Imported here, not at the top: OpenTelemetry is an optional extra.
        from opentelemetry import context, trace  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )
    except ImportError:
        log.debug("tracing.unavailable")
        return None
    return _Otel(trace=trace, context=context, w3c=TraceContextTextMapPropagator())


def trace_of(task: Task) -> str | None:
    """The ``traceparent`` a task carries, if any."""
    # Read leniently: a runtime whose Task model predates the field must keep working untraced.
    trace: str | None = getattr(task, "trace", None)
    return trace


def available() -> bool:
    """Whether the OpenTelemetry API can be imported (the ``otel`` extra is installed)."""
    return _otel() is not None


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span; None without OpenTelemetry or a valid span."""
    otel = _otel()
    if otel is None:
        return None
    carrier: dict[str, str] = {}
    # The W3C propagator itself, not the global one: the wire format is traceparent whatever
    # propagators the program configured for its own protocols.
    otel.w3c.inject(carrier)
    return carrier.get("traceparent")


# ---------------------------------------------------------------------- submitting


class Submission:
    """A submission's trace: ``stamp`` gives tasks its context, ``link`` ties it to earlier traces
    (of dependencies on the board). Without OpenTelemetry, or outside any trace, it does nothing."""

    traceparent: str | None = None

    def stamp(self, batch: Sequence[Task]) -> list[Task]:
        """The tasks of ``batch`` carrying this submission's ``traceparent`` (a task that has one
        already keeps it: the caller chose its trace)."""
        if self.traceparent is None:
            return list(batch)
        update = {"trace": self.traceparent}
        return [task if trace_of(task) is not None else task.model_copy(update=update) for task in batch]

    def link(self, traceparent: str | None) -> None:
        """Link the submission to the span of ``traceparent`` (a dependency's submission)."""


class _TracedSubmission(Submission):
    def __init__(self, otel: _Otel, span: Span) -> None:
        self._otel = otel
        self._span = span
        self._linked: set[str] = set()
        self.traceparent = traceparent()

    def stamp(self, batch: Sequence[Task]) -> list[Task]:
        self._span.set_attribute("ants.tasks", len(batch))
        self._span.set_attribute("ants.task.ids", [task.id for task in batch[:_MAX_IDS]])
        return super().stamp(batch)

    def link(self, traceparent: str | None) -> None:
        if traceparent is None or traceparent in self._linked or traceparent == self.traceparent:
            return
        self._linked.add(traceparent)
        context = self._otel.trace.get_current_span(self._otel.parent(traceparent)).get_span_context()
        if context.is_valid:
            self._span.add_link(context, {"ants.link": "dependency"})


@contextmanager
def submitting() -> Iterator[Submission]:
    """A span for one submission (``ants.submit``), current while the body runs, and its
    ``Submission`` (which stamps the tasks with the span's context)."""
    otel = _otel()
    if otel is None or not otel.recording():
        yield Submission()
        return
    kind = otel.trace.SpanKind.PRODUCER
    with otel.tracer().start_as_current_span("ants.submit", kind=kind) as span:
        yield _TracedSubmission(otel, span)


# ---------------------------------------------------------------------- working


class TaskTrace:
    """One attempt at a task, as the agent runtime reports it; this base class ignores everything
    (no OpenTelemetry). Call ``end`` exactly once."""

    def claimed(self, start_ns: int, end_ns: int, *, token: int, deferred: bool) -> None:
        """The claim took from ``start_ns`` to ``end_ns`` (``time.time_ns``)."""

    def handling(self, *, not_errors: tuple[type[Exception], ...] = ()) -> AbstractContextManager[object]:
        """Wraps the handler's run (inside its asyncio task: it becomes the current span there);
        exceptions of ``not_errors`` (a ``Decline``) are events on the span, not errors."""
        return nullcontext()

    def finishing(self, what: str) -> AbstractContextManager[object]:
        """Wraps the write of the attempt's outcome (``complete`` or ``fail``)."""
        return nullcontext()

    def outcome(self, outcome: str, error: str | None = None) -> None:
        """How the attempt ended (``completed``, ``failed``, ``expired``, ``declined`` ...)."""

    def end(self) -> None:
        """The attempt is over."""


NO_TRACE = TaskTrace()
"""The attempt trace used when OpenTelemetry is not installed."""

_FAILED_OUTCOMES = frozenset({"failed", "expired"})


class _OtelTaskTrace(TaskTrace):
    def __init__(self, otel: _Otel, span: Span) -> None:
        self._otel = otel
        self._span = span
        self._context = otel.trace.set_span_in_context(span, _empty(otel))
        self._outcome: tuple[str, str | None] | None = None

    def claimed(self, start_ns: int, end_ns: int, *, token: int, deferred: bool) -> None:
        attributes = {"ants.lease.token": token, "ants.claim.deferred": deferred}
        span = self._otel.tracer().start_span(
            "ants.claim", context=self._context, start_time=start_ns, attributes=attributes
        )
        span.end(end_time=end_ns)

    @contextmanager
    def _child(self, name: str, not_errors: tuple[type[Exception], ...] = ()) -> Iterator[object]:
        trace = self._otel.trace
        span = self._otel.tracer().start_span(name, context=self._context)
        try:
            # Not recorded as errors by OpenTelemetry itself: a decline or a cancel is not a failure.
            # Ended below, not on leaving use_span: an ended span ignores the status set here.
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                yield span
        except not_errors as exc:
            span.add_event(type(exc).__name__, {"message": str(exc)})
            raise
        except asyncio.CancelledError:
            span.add_event("cancelled")
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    def handling(self, *, not_errors: tuple[type[Exception], ...] = ()) -> AbstractContextManager[object]:
        return self._child("ants.handler", not_errors)

    def finishing(self, what: str) -> AbstractContextManager[object]:
        return self._child(f"ants.{what}")

    def outcome(self, outcome: str, error: str | None = None) -> None:
        self._outcome = (outcome, error)

    def end(self) -> None:
        outcome, error = self._outcome or ("abandoned", None)
        self._span.set_attribute("ants.outcome", outcome)
        if outcome in _FAILED_OUTCOMES:
            trace = self._otel.trace
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, error or outcome))
        self._span.end()


def attempt(task: Task, agent_id: str, *, started_ns: int) -> TaskTrace:
    """The trace of ``agent_id``'s attempt at ``task``, which began at ``started_ns``
    (``time.time_ns``): a child of the submitter's span (``task.trace``), else a new trace."""
    otel = _otel()
    if otel is None or not otel.recording():
        return NO_TRACE
    attributes: dict[str, Any] = {
        "ants.task.id": task.id,
        "ants.task.kind": task.kind,
        "ants.task.route": task.route,
        "ants.agent.id": agent_id,
    }
    if task.depends_on:
        attributes["ants.task.depends_on"] = list(task.depends_on)
    span = otel.tracer().start_span(
        "ants.attempt",
        context=otel.parent(trace_of(task)),
        kind=otel.trace.SpanKind.CONSUMER,
        start_time=started_ns,
        attributes=attributes,
    )
    return _OtelTaskTrace(otel, span)
