"""The agent runtime: pull tickets with spare capacity, claim, run handlers under heartbeats.

An ``Agent`` owns every background task it starts (route discovery, one pull loop per route it can
serve, one runner per task in flight) and cancels them on exit. Shutdown stops pulling first, lets
running handlers finish within ``shutdown_grace``, then releases what is left so others take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import nats.errors
import pydantic
from nats.aio.msg import Msg
from pydantic import JsonValue

from ._pull import fetch
from ._store import translate_errors
from .board import Lease, Taken, TaskBoard
from .errors import AntsError, CorruptEntry, LeaseLost, ServerUnavailable
from .log import get_logger
from .models import Task, Ticket, TrailEvent
from .names import WORK_STREAM, is_valid_id, work_consumer

log = get_logger("agent")

_FETCH_TIMEOUT_S = 2.0
_RETRY_BACKOFF_S = 0.5


@dataclass
class TaskContext:
    """What a handler gets besides the task: its lease, the board, and a lost-lease signal."""

    task: Task
    lease: Lease
    board: TaskBoard
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def payload(self) -> JsonValue:
        """The task's payload."""
        return self.task.payload

    async def dependency_results(self) -> dict[str, JsonValue]:
        """Results of the task's dependencies (all done, or the task would not have been claimable)."""
        return {dep: (await self.board.get(dep)).result for dep in self.task.depends_on}


Handler = Callable[[Task, TaskContext], Awaitable[JsonValue]]


class Agent:
    """An autonomous worker. Use as ``async with Agent(board, name=..., capabilities=[...]) as agent``."""

    def __init__(
        self,
        board: TaskBoard,
        *,
        name: str,
        capabilities: Iterable[str] = (),
        capacity: int = 1,
        agent_id: str | None = None,
        handler_timeout: float | None = None,
        shutdown_grace: float = 10.0,
    ) -> None:
        if capacity < 1:
            raise AntsError(f"capacity must be at least 1, got {capacity}")
        self.board = board
        self.name = name
        self.id = agent_id or f"{name}-{uuid.uuid4().hex[:8]}"
        if not is_valid_id(self.id):
            raise AntsError(f"invalid agent id {self.id!r}")
        self.capabilities = frozenset(capabilities)
        self.capacity = capacity
        self.handler_timeout = handler_timeout
        self.shutdown_grace = shutdown_grace
        self._handlers: dict[str, Handler] = {}
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._discovery: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._stopped = asyncio.Event()

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator registering the coroutine that handles tasks of ``kind``."""

        def register(func: Handler) -> Handler:
            self._handlers[kind] = func
            return func

        return register

    @property
    def load(self) -> int:
        """Tasks in flight right now."""
        return len(self._runners)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self._announce_presence("agent.joined")
        self._discovery = asyncio.create_task(self._discover(), name=f"{self.id}:discover")
        log.info(
            "agent.started", agent=self.id, capabilities=sorted(self.capabilities), capacity=self.capacity
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to return (the context manager's exit then shuts down gracefully)."""
        self._stopped.set()

    async def run(self) -> None:
        """Serve until ``stop()`` or SIGINT/SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._stopped.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _shutdown(self) -> None:
        # Stop pulling first, so no new work arrives while we drain.
        pullers = [*self._pullers.values(), *([self._discovery] if self._discovery else [])]
        for task in pullers:
            task.cancel()
        await asyncio.gather(*pullers, return_exceptions=True)
        self._pullers.clear()
        if self._runners:
            _, pending = await asyncio.wait(set(self._runners), timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()  # the runner releases its lease and hands the ticket back
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(ServerUnavailable):  # leaving without a connection is still leaving
            await self._announce_presence("agent.left")
        log.info("agent.stopped", agent=self.id)

    async def _announce_presence(self, kind: str) -> None:
        capabilities: list[JsonValue] = [*sorted(self.capabilities)]
        data: JsonValue = {"name": self.name, "capabilities": capabilities, "capacity": self.capacity}
        await self.board.trail.emit(TrailEvent(kind=kind, ref=self.id, agent=self.id, data=data))

    # ----------------------------------------------------------------- pulling

    async def _discover(self) -> None:
        """Start a pull loop for every route (existing or future) whose requirements we meet."""
        async for route in self.board._routes.watch():
            name = route.name
            if name in self._pullers or not set(route.requires) <= self.capabilities:
                continue
            self._pullers[name] = asyncio.create_task(self._pull(name), name=f"{self.id}:pull:{name}")

    async def _pull(self, route: str) -> None:
        js = self.board.nc.jetstream()
        async with translate_errors(f"bind consumer {work_consumer(route)}"):
            sub = await js.pull_subscribe_bind(durable=work_consumer(route), stream=WORK_STREAM)
        try:
            while True:
                await self._room.wait()
                try:
                    msgs = await fetch(sub, 1, _FETCH_TIMEOUT_S)
                except nats.errors.Error as exc:  # disconnected: the client reconnects by itself
                    log.debug("agent.fetch_failed", agent=self.id, route=route, error=str(exc))
                    await asyncio.sleep(_RETRY_BACKOFF_S)
                    continue
                for msg in msgs:
                    if len(self._runners) >= self.capacity:
                        await msg.nak()  # another route's loop filled the last slot meanwhile
                        continue
                    self._start_runner(msg)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _start_runner(self, msg: Msg) -> None:
        runner = asyncio.create_task(self._work(msg), name=f"{self.id}:work")
        self._runners.add(runner)
        runner.add_done_callback(self._runner_done)
        if len(self._runners) >= self.capacity:
            self._room.clear()

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        self._runners.discard(runner)
        self._room.set()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("agent.runner_crashed", agent=self.id, error=repr(runner.exception()))

    # ----------------------------------------------------------------- working

    async def _work(self, msg: Msg) -> None:
        try:
            ticket = Ticket.model_validate_json(msg.data)
        except pydantic.ValidationError:
            log.warning("ticket.corrupt", agent=self.id, subject=msg.subject)
            await msg.term()
            return
        try:
            outcome = await self.board.claim(ticket.task_id, self.id)
        except CorruptEntry as exc:
            # Garbage in the bucket must not crash us nor loop the ticket forever.
            log.error("task.corrupt", agent=self.id, task_id=ticket.task_id, error=str(exc))
            await msg.term()
            return
        if isinstance(outcome, Taken):
            await self._settle_ticket(msg, outcome)
            return
        lease = outcome
        handler = self._handlers.get(lease.task.kind)
        if handler is None:
            log.warning("task.no_handler", agent=self.id, task_id=lease.task_id, kind=lease.task.kind)
            await self.board.release(lease)
            await msg.nak(delay=lease.ttl)
            return
        try:
            await self._run_handler(msg, lease, handler)
        except asyncio.CancelledError:
            # Shutdown past the grace period: give the task back so another agent takes it now.
            with contextlib.suppress(AntsError, nats.errors.Error):
                await asyncio.shield(self._give_back(msg, lease))
            raise

    async def _give_back(self, msg: Msg, lease: Lease) -> None:
        await self.board.release(lease)
        await msg.nak()

    async def _settle_ticket(self, msg: Msg, taken: Taken) -> None:
        if taken.reason == "held":
            # Look again about when the holder's lease would expire: one check per TTL, not a herd.
            await msg.nak(delay=(taken.retry_after or 0.0) + 0.05)
        else:
            await msg.ack()

    async def _run_handler(self, msg: Msg, lease: Lease, handler: Handler) -> None:
        ctx = TaskContext(lease.task, lease, self.board)
        work = asyncio.create_task(self._call(handler, lease.task, ctx), name=f"{self.id}:{lease.task_id}")
        beat = asyncio.create_task(self._heartbeat(msg, lease, ctx, work), name=f"{self.id}:hb")
        try:
            result = await work
        except asyncio.CancelledError:
            if ctx.lease_lost.is_set():
                log.warning("task.abandoned", agent=self.id, task_id=lease.task_id, reason="lease lost")
                return
            raise
        except Exception as exc:  # a handler's failure is the task's failure, not ours
            await self._finish(msg, lease, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        await self._finish(msg, lease, result=result)

    async def _call(self, handler: Handler, task: Task, ctx: TaskContext) -> JsonValue:
        if self.handler_timeout is None:
            return await handler(task, ctx)
        try:
            async with asyncio.timeout(self.handler_timeout):
                return await handler(task, ctx)
        except TimeoutError:
            raise TimeoutError(f"handler exceeded {self.handler_timeout}s") from None

    async def _heartbeat(
        self, msg: Msg, lease: Lease, ctx: TaskContext, work: asyncio.Task[JsonValue]
    ) -> None:
        interval = lease.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.board.heartbeat(lease)
                await msg.in_progress()
            except LeaseLost:
                ctx.lease_lost.set()
                work.cancel()
                return
            except (ServerUnavailable, nats.errors.Error) as exc:
                log.warning("lease.heartbeat_failed", agent=self.id, task_id=lease.task_id, error=str(exc))
                if self.board.nc.is_closed:  # no reconnect will come: the lease is as good as gone
                    ctx.lease_lost.set()
                    work.cancel()
                    return

    async def _finish(
        self, msg: Msg, lease: Lease, *, result: JsonValue = None, error: str | None = None
    ) -> None:
        """Record the outcome, retrying while the server is unreachable and the lease may live."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + lease.ttl
        while True:
            try:
                if error is None:
                    record = await self.board.complete(lease, result)
                else:
                    record = await self.board.fail(lease, error)
                break
            except LeaseLost:
                log.warning(
                    "task.late_result_rejected", agent=self.id, task_id=lease.task_id, token=lease.token
                )
                return
            except ServerUnavailable:
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(_RETRY_BACKOFF_S)
        if record.status.terminal:
            await msg.ack()
        else:
            await msg.nak(delay=_RETRY_BACKOFF_S)
