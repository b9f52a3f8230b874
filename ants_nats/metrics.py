"""Prometheus metrics: one agent's work (``AgentMetrics``) and the swarm as the dashboard sees it
(``SwarmCollector``), each in its own registry, served over HTTP by ``MetricsServer``.

Everything is counted in process memory: a task costs no extra NATS message to be counted. Each
``Agent`` (and each dashboard) has a registry of its own rather than prometheus-client's global
default one, so several agents in one process neither collide nor mix their numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._version import __version__
from .log import get_logger
from .models import ANY_CAPABILITY, Outcome, Task

if TYPE_CHECKING:
    from .dashboard.state import SwarmState

log = get_logger("metrics")

HOST = "127.0.0.1"
"""Metrics are served on loopback only (a scraper on the same host, or a sidecar, reads them)."""

Ending = Literal[Outcome, "cancelled", "rate_limited"]
"""How an attempt ends in an agent's hands: as its record keeps it (``Outcome``), or stopped by a
cancel (the record says the task is cancelled), or given back for a rate limit (recorded as
``released``)."""

Counted = Literal["claimed", Ending]
"""What an agent counts of the tasks in its hands: each claim and each ``Ending`` (a counter each,
by capability)."""

COUNTED: tuple[Counted, ...] = get_args(Counted)

HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
"""Handler durations (seconds): from a few milliseconds (the fast path) to long jobs."""

_HELP: dict[Counted, str] = {
    "claimed": "Tasks this agent claimed (deferred claims included), per required capability.",
    "completed": "Tasks this agent completed, per required capability.",
    "failed": "Attempts that failed in this agent's hands (handler error or timeout), per capability.",
    "expired": "Claims this agent lost (its lease expired or was taken over), per required capability.",
    "declined": "Tasks this agent declined after claiming them, per required capability.",
    "cancelled": "Running tasks this agent stopped because they were cancelled, per required capability.",
    "released": "Claims this agent gave back unfinished (shutdown, unconfirmed cancel), per capability.",
    "asked": "Tasks this agent parked to wait for an answer to a question (ctx.ask), per capability.",
    "rate_limited": "Tasks this agent gave back because a provider's rate limit was met, per capability.",
}


def capabilities_of(task: Task) -> tuple[str, ...]:
    """The capability labels a task is counted under: each it requires, or ``any`` (as the ledger)."""
    return task.requires or (ANY_CAPABILITY,)


@dataclass
class WorkStats:
    """An agent's handler runs as its ``nats micro stats`` endpoint reports them: tasks served
    (handler runs that ended), errors (failed runs), total processing time."""

    served: int = 0
    errors: int = 0
    processing_ns: int = 0
    last_error: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def average_ns(self) -> int:
        """Mean processing time of a served task, in nanoseconds (0 before the first)."""
        return self.processing_ns // self.served if self.served else 0

    def as_json(self) -> dict[str, int | str | dict[str, int]]:
        """The statistics as a JSON object (the answer of the agent's ``work`` endpoint)."""
        return {
            "served": self.served,
            "errors": self.errors,
            "processing_time_ns": self.processing_ns,
            "average_processing_time_ns": self.average_ns,
            "last_error": self.last_error,
            "outcomes": dict(self.outcomes),
        }


class AgentMetrics:
    """The metrics of one agent, in a registry of its own (``registry``).

    The runtime calls ``count`` when something happens to a task, ``handled`` when a handler run
    ends and ``heartbeat_failed`` when a lease write does not reach the server; ``load`` is read at
    scrape time, so in-flight work costs nothing to keep current.
    """

    def __init__(self, *, agent_id: str, name: str, capacity: int, load: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.work = WorkStats()
        """Served, errors and processing time, for the agent's NATS service statistics."""
        registry = self.registry
        self._counters = {
            counted: Counter(f"ants_agent_tasks_{counted}", _HELP[counted], ["capability"], registry=registry)
            for counted in COUNTED
        }
        self._handler_seconds = Histogram(
            "ants_agent_handler_duration_seconds",
            "Time handlers ran, per task kind (runs that failed, were cancelled or declined included).",
            ["kind"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )
        self._heartbeat_failures = Counter(
            "ants_agent_heartbeat_failures",
            "Lease writes (heartbeats and deferred claims) that did not reach the server.",
            registry=registry,
        )
        in_flight = Gauge(
            "ants_agent_tasks_in_flight", "Tasks this agent is working on now.", registry=registry
        )
        in_flight.set_function(lambda: float(load()))
        Gauge("ants_agent_capacity", "Tasks this agent takes at once.", registry=registry).set(capacity)
        Info("ants_agent", "This agent's identity.", registry=registry).info(
            {"agent_id": agent_id, "name": name, "version": __version__}
        )

    def count(self, counted: Counted, task: Task) -> None:
        """One more ``counted`` for ``task``, under each capability it requires."""
        counter = self._counters[counted]
        for capability in capabilities_of(task):
            counter.labels(capability).inc()
        if counted != "claimed":
            self.work.outcomes[counted] = self.work.outcomes.get(counted, 0) + 1

    def handled(self, kind: str, elapsed_ns: int, error: str | None = None) -> None:
        """A handler run of ``kind`` ended after ``elapsed_ns``; ``error`` if it failed."""
        self._handler_seconds.labels(kind).observe(elapsed_ns / 1e9)
        work = self.work
        work.served += 1
        work.processing_ns += elapsed_ns
        if error is not None:
            work.errors += 1
            work.last_error = error

    def heartbeat_failed(self) -> None:
        """A heartbeat (or deferred claim write) did not reach the server."""
        self._heartbeat_failures.inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0.0 if absent), e.g. ``value("ants_agent_tasks_completed_total",
        capability="llm")``: for tests and for programs that want a number without scraping."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


class SwarmCollector(Collector):
    """Swarm-wide gauges read from a dashboard's model at scrape time: tasks by status, queue depth
    per route and lane, live agents and their load and capacity, unroutable tasks."""

    def __init__(self, state: SwarmState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        """The gauges as of now."""
        state = self._state
        by_status = GaugeMetricFamily(
            "ants_swarm_tasks", "Tasks on the board the dashboard knows, by status.", labels=["status"]
        )
        for status, n in sorted(state.tasks.by_status().items()):
            if n:
                by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily(
            "ants_swarm_tasks_unroutable",
            "Unfinished tasks no live agent can serve.",
            value=state.tasks.unroutable,
        )
        waiting = GaugeMetricFamily(
            "ants_swarm_queue_pending",
            "Tickets waiting for an agent, per route and lane.",
            labels=["route", "lane"],
        )
        held = GaugeMetricFamily(
            "ants_swarm_queue_in_flight",
            "Tickets delivered to an agent and not yet settled, per route and lane.",
            labels=["route", "lane"],
        )
        for route, depth in sorted(state.queues.items()):
            waiting.add_metric([route, "normal"], depth.pending)
            waiting.add_metric([route, "express"], depth.express_pending)
            held.add_metric([route, "normal"], depth.in_flight)
            held.add_metric([route, "express"], depth.express_in_flight)
        yield waiting
        yield held
        cards = list(state.cards.values())
        yield GaugeMetricFamily("ants_swarm_agents", "Live agents (cards announced).", value=len(cards))
        yield GaugeMetricFamily(
            "ants_swarm_agent_load", "Tasks the live agents work on.", value=sum(c.load for c in cards)
        )
        yield GaugeMetricFamily(
            "ants_swarm_agent_capacity",
            "Tasks the live agents take at once.",
            value=sum(c.capacity for c in cards),
        )


def exposition(registry: CollectorRegistry) -> web.Response:
    """``registry`` rendered in the Prometheus text format, as an HTTP response."""
    body = generate_latest(registry)
    # CONTENT_TYPE_LATEST carries its charset; aiohttp wants it in the header, not content_type.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


class MetricsServer:
    """``registry`` served at ``/metrics`` on 127.0.0.1:``port`` (0: a free port) by aiohttp, in
    the caller's event loop (no thread): ``await start()``, read ``url``, ``await stop()``."""

    def __init__(self, registry: CollectorRegistry, port: int = 0) -> None:
        self.registry = registry
        self.port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The bound address of the metrics, e.g. ``http://127.0.0.1:9464/metrics``; None unless running."""
        return self._url

    async def start(self) -> str:
        """Bind and serve; return ``url``. A port in use raises ``OSError`` (nothing left running)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = int(runner.addresses[0][1])  # the one really bound (port 0: a free one)
        self._url = f"http://{HOST}:{port}/metrics"
        log.info("metrics.serving", url=self._url)
        return self._url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return exposition(self.registry)


def elapsed_since(start_ns: int) -> int:
    """Nanoseconds since ``start_ns`` (``time.perf_counter_ns``)."""
    return time.perf_counter_ns() - start_ns
