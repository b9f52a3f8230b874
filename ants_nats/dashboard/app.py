"""The dashboard's web server: the page, its static assets, a JSON snapshot and the live stream.

``Dashboard`` owns everything it starts: the feeds (one set per process, whatever the number of
tabs), the aiohttp server on 127.0.0.1, and each tab's stream; leaving ``async with`` cancels and
closes them all. It only reads, so observer credentials suffice.

``/metrics`` serves swarm-wide gauges in the Prometheus text format (tasks by status, queue depth
per route and lane, live agents), read from the same in-memory model at scrape time: a scrape
costs no NATS message.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .._aio import cancel_and_wait, stopping_on_signals
from ..board import TaskBoard
from ..errors import AntsError, TaskNotFound
from ..log import get_logger
from ..metrics import SwarmCollector, exposition
from ..models import TaskStatus
from ..names import TRAIL_SUBJECT_PREFIX, is_valid_capability, is_valid_id, trail_filter
from ..waiting import why_waiting
from .feeds import RESTART_DELAY_S, Feeds
from .hub import Hub
from .state import SwarmState, event_json, task_summary

TRAIL_QUERY_LAST = 500
"""Most events a trail query returns (the newest)."""
_STATUSES = frozenset(s.value for s in TaskStatus)
_KIND = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_*-]+){0,5}$")

log = get_logger("dashboard")

STATIC_DIR = Path(__file__).parent / "static"
"""The page and its assets, shipped in the package (no CDN, no build step)."""

HOST = "127.0.0.1"
"""The dashboard answers on loopback only: it shows everything on the board to whoever connects."""

KEEPALIVE_S = 15.0
"""A comment line this often keeps idle streams open through proxies and notices gone tabs."""

_SECURITY_HEADERS = {
    # Everything the page uses comes from this server; nothing may load from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Dashboard:
    """A live, read-only web view of ``board``: ``async with Dashboard(board, port=0) as d: d.url``.

    ``port`` 0 takes a free port. ``window`` is how many seconds of throughput and latency the
    charts show (the trail is read from that far back when the dashboard starts).
    """

    def __init__(self, board: TaskBoard, *, port: int = 0, window: float = 300.0) -> None:
        self.board = board
        self.port = port
        self.state = SwarmState(
            half_life=board.config.reputation.half_life,
            quarantine_below=board.config.reputation.quarantine_below,
            mark_half_life=board.trail.config.half_life,
            window=window,
        )
        self.hub = Hub(self.state)
        self.registry = CollectorRegistry(auto_describe=True)
        """The swarm gauges ``/metrics`` serves (a registry of this dashboard's own)."""
        self.registry.register(SwarmCollector(self.state))
        self._feeds = Feeds(board, self.hub, window=window)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The bound address, e.g. ``http://127.0.0.1:8377/`` (only while running)."""
        if self._url is None:
            raise RuntimeError("the dashboard is not running (use it with async with)")
        return self._url

    async def __aenter__(self) -> Dashboard:
        for name, feed in self._feeds.coroutines().items():
            self._tasks.append(asyncio.create_task(self._supervise(name, feed), name=f"dashboard-{name}"))
        try:
            self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, HOST, self.port)
            await site.start()
            port = int(self._runner.addresses[0][1])  # the one really bound (port 0: a free one)
            self._url = f"http://{HOST}:{port}/"
        except BaseException:
            await self._stop()
            raise
        log.info("dashboard.started", url=self._url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        # Streams first: their handlers return, so the server's shutdown need not wait for them.
        self.hub.close()
        # Cancelled until really ended: a feed inside nats-py may swallow one cancellation.
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._url = None

    async def _supervise(self, name: str, feed: Callable[[], Awaitable[None]]) -> None:
        """Run one feed for as long as the dashboard runs, restarting it if it fails (a server
        restart, a lost connection): the page goes on showing what it knew meanwhile."""
        while True:
            try:
                await feed()
                return  # a feed that ends on its own has nothing more to read (no ledger bucket)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of a feed: log it, keep the others going
                log.warning("dashboard.feed_failed", feed=name, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RESTART_DELAY_S)

    # ------------------------------------------------------------------ HTTP

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/task/{task_id}", self._task)
        app.router.add_get("/api/tasks", self._tasks_search)
        app.router.add_get("/api/trail", self._trail)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        return app

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _metrics(self, request: web.Request) -> web.Response:
        return exposition(self.registry)

    async def _snapshot(self, request: web.Request) -> web.Response:
        return _json(self.state.snapshot())

    async def _task(self, request: web.Request) -> web.Response:
        """A task's whole record (payload and result included), why it waits if unfinished, and
        its trail history."""
        task_id = request.match_info["task_id"]
        if not is_valid_id(task_id):
            return _json({"error": f"invalid task id {task_id!r}"}, status=400)
        try:
            record = await self.board.get(task_id)
            waiting = await why_waiting(self.board, record)
            history = await self.board.trail.history(task_id)
        except TaskNotFound:
            return _json({"error": f"no task {task_id!r} on the board"}, status=404)
        except AntsError as exc:
            return _json({"error": str(exc)}, status=503)
        return _json(
            {
                "record": record.model_dump(mode="json"),
                "summary": task_summary(record),
                "waiting": None if waiting is None else waiting.model_dump(mode="json"),
                "history": [event_json(e) for e in history],
            }
        )

    async def _tasks_search(self, request: web.Request) -> web.Response:
        """The newest tasks whose id starts with ``prefix`` and with the given ``status`` and
        ``kind``, and how many match: answered from the dashboard's index, however large the board."""
        prefix, status, kind = (request.query.get(name, "").strip() for name in ("prefix", "status", "kind"))
        if (
            (prefix and not is_valid_id(prefix))
            or (status and status not in _STATUSES)
            or (kind and not is_valid_capability(kind))
        ):
            return _json({"error": "invalid search"}, status=400)
        found, matched = self.state.tasks.search(prefix=prefix, status=status, kind=kind)
        return _json({"tasks": found, "matched": matched})

    async def _trail(self, request: web.Request) -> web.Response:
        """The trail's events matching ``kind``, ``task`` and ``agent`` (the trail view's filters),
        the last ``TRAIL_QUERY_LAST`` of them, from the whole stream, not only since the page opened."""
        kind, task, agent = (request.query.get(name, "").strip() for name in ("kind", "task", "agent"))
        if (task and not is_valid_id(task)) or (kind and not _KIND.match(kind)):
            return _json({"error": "invalid filter"}, status=400)
        subject = trail_filter(kind or "task.*", task or "*") if kind or task else f"{TRAIL_SUBJECT_PREFIX}.>"
        try:
            found = await self.board.trail.replay(subject)
        except AntsError as exc:
            return _json({"error": str(exc)}, status=503)
        matching = [e for e in found if not agent or agent in (e.agent or "") or agent in (e.by or "")]
        return _json({"events": [event_json(e) for e in matching[-TRAIL_QUERY_LAST:]]})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The live stream: a snapshot, then every delta, until the tab or the dashboard goes."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        subscription = self.hub.subscribe()
        try:
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        data = await subscription.next()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if data is None:
                    break
                await response.write(data)
        except ConnectionResetError:
            pass  # the tab went away
        finally:
            self.hub.unsubscribe(subscription)
        return response


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:  # a stream has sent its headers already (they are set on it)
        response.headers.update(_SECURITY_HEADERS)
    return response


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def run_dashboard(
    url: str,
    *,
    port: int = 0,
    seed: str | None = None,
    say: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """The ``ants-nats dashboard`` command: connect to ``url`` (as nkeys user ``seed``, e.g. an
    observer's), serve the dashboard on 127.0.0.1:``port`` and tell ``say`` its address; run until
    SIGINT/SIGTERM (or ``stop`` is set). Returns the exit status."""
    stop = stop or asyncio.Event()
    with stopping_on_signals(stop.set):
        async with (
            TaskBoard.connect(url, name="ants-nats-dashboard", seed=seed, create=False) as board,
            Dashboard(board, port=port) as dashboard,
        ):
            if say is not None:
                say(f"dashboard at {dashboard.url} (read-only, from {url}); Ctrl-C stops it")
            await stop.wait()
    return 0
