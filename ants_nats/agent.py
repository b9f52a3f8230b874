"""The agent runtime: pull tickets with spare capacity, claim, decide, run handlers under heartbeats.

An ``Agent`` owns every background task it starts (its presence, route discovery, one pull loop per
route it can serve, one runner per task in flight) and cancels them on exit. Shutdown stops pulling
first, lets running handlers finish within ``shutdown_grace``, releases what is left so others take
it, then withdraws the agent's card.

Each agent counts its work locally (``Agent.metrics``: Prometheus counters in a registry of its
own, served on 127.0.0.1 when given ``metrics_port``; the same numbers feed ``nats micro stats``)
and reports each attempt as spans of the submitter's trace (``ants_nats.tracing``, with the
optional OpenTelemetry extra). Neither sends a message of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Self

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import JsonValue

from . import matching, tracing
from ._aio import cancel_and_wait, stopping_on_signals
from ._pull import Puller, fetch_patiently
from ._store import translate_errors
from ._version import __version__
from .board import Lease, Taken, TaskBoard
from .context import AskingForInput, Decline, Handler, NonRetryable, TaskContext
from .errors import (
    AntsError,
    ArtifactNotFound,
    CorruptEntry,
    InvalidTask,
    LeaseLost,
    RateLimited,
    ServerUnavailable,
)
from .identity import Identity
from .log import get_logger
from .metrics import AgentMetrics, MetricsServer, Outcome
from .models import AgentCard, CapabilitySpec, Route, Task, Ticket, TrailEvent, Usage, parse_or_none, utcnow
from .names import WORK_STREAM, is_valid_id, requires_of, trail_filter, work_consumer
from .presence import Presence, as_specs
from .throttle import Throttle
from .tracing import TaskTrace

log = get_logger("agent")

Decider = Callable[[tuple[CapabilitySpec, ...], int, int, Task], matching.Verdict]
"""``decide(capabilities, load, capacity, task)``: an agent's own rule for accepting a task."""

_FETCH_TIMEOUT_S = 2.0
_EXPRESS_LOOK_S = 0.05
"""How long a look at an express lane waits (a lane holding a ticket answers well within it)."""
_EXPRESS_IDLE_S = 0.5
"""Longest an express ticket waits for an idle agent (the normal lane's long poll, when both exist)."""
_RETRY_BACKOFF_S = 0.5
_CANCEL_NEWS_S = 600.0
"""How long an agent remembers that a task was cancelled (its ticket reads the record meanwhile)."""


def _first_leaf(group: BaseExceptionGroup[AskingForInput]) -> AskingForInput:
    """The first exception of ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return first if isinstance(first, AskingForInput) else _first_leaf(first)


class _Recent:
    """Task ids noted lately, each for a while (loop time); expired ones are dropped as new come."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def note(self, task_id: str, seconds: float) -> None:
        now = asyncio.get_running_loop().time()
        self._until = {t: until for t, until in self._until.items() if until > now}
        self._until[task_id] = now + seconds

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._until.get(task_id, 0.0) > asyncio.get_running_loop().time()


class Agent:
    """An autonomous worker. Use as ``async with Agent(board, name=..., capabilities=[...]) as agent``."""

    def __init__(
        self,
        board: TaskBoard,
        *,
        name: str,
        capabilities: Iterable[str | CapabilitySpec] = (),
        capacity: int = 1,
        agent_id: str | None = None,
        handler_timeout: float | None = None,
        shutdown_grace: float = 10.0,
        decide: Decider = matching.decide,
        decline_backoff: float = 1.0,
        identity: Identity | None = None,
        metrics_port: int | None = None,
        description: str | None = None,
    ) -> None:
        """``metrics_port``: serve Prometheus metrics on 127.0.0.1 at that port while the agent
        runs (0 takes a free port; ``metrics_url`` tells which); None serves none (the counters are
        kept all the same, in ``metrics``). ``description``: what the agent is for, in words, on its
        card (for planners choosing among agents, and its A2A card)."""
        if capacity < 1:
            raise AntsError(f"capacity must be at least 1, got {capacity}")
        self.board = board
        self.name = name
        self.description = description
        self.id = agent_id or f"{name}-{uuid.uuid4().hex[:8]}"
        if not is_valid_id(self.id):
            raise AntsError(f"invalid agent id {self.id!r}")
        self.specs = as_specs(capabilities)
        self.capacity = capacity
        self.handler_timeout = handler_timeout
        self.shutdown_grace = shutdown_grace
        self.decline_backoff = decline_backoff
        self._decide = decide
        self._handlers: dict[str, Handler] = {}
        self._routes: dict[str, Route] = {}
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self.identity = identity or Identity.generate()
        """The key this agent signs its trail events with; its public half is on the card."""
        self.metrics = AgentMetrics(
            agent_id=self.id, name=name, capacity=capacity, load=lambda: len(self._runners)
        )
        """This agent's counters (claims, outcomes, handler durations ...), in its own registry."""
        self._metrics_server = (
            None if metrics_port is None else MetricsServer(self.metrics.registry, metrics_port)
        )
        self._presence = Presence(board, self.card, self.identity, self.metrics.work)
        self._throttle = Throttle(board, self.id)
        self._runners: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._stopped = asyncio.Event()
        self._running: dict[str, tuple[TaskContext, asyncio.Task[JsonValue]]] = {}
        """Handlers at work, by task id (so a cancel reaches them)."""
        self._cancels: Subscription | None = None
        self._listening_since: datetime | None = None
        """When this agent began to hear cancels: a ticket published earlier may hide one."""
        self._cancelled = _Recent()
        """Tasks announced as cancelled lately (their tickets read the record meanwhile)."""
        self._declined = _Recent()
        """Tasks this agent declined lately (it steps aside for them meanwhile)."""

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

    @property
    def metrics_url(self) -> str | None:
        """Where the metrics are served, e.g. ``http://127.0.0.1:9464/metrics`` (None if nowhere)."""
        return None if self._metrics_server is None else self._metrics_server.url

    @property
    def capabilities(self) -> frozenset[str]:
        """Names of the capabilities this agent announces."""
        return frozenset(spec.name for spec in self.specs)

    def card(self) -> AgentCard:
        """This agent's card as it would be announced now."""
        return AgentCard(
            id=self.id,
            name=self.name,
            description=self.description,
            capabilities=self.specs,
            load=self.load,
            capacity=self.capacity,
            software=__version__,
            public_key=self.identity.public_key,
        )

    async def update_capabilities(self, capabilities: Iterable[str | CapabilitySpec]) -> None:
        """Change what this agent can do: re-announce, and pull from exactly the routes it now serves."""
        self.specs = as_specs(capabilities)
        await self._presence.capabilities_changed()
        unserved = [
            name for name in self._pullers if not set(self._routes[name].requires) <= self.capabilities
        ]
        await cancel_and_wait([self._pullers.pop(name) for name in unserved])
        for route in self._routes.values():
            self._maybe_pull(route)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self.board.sign_as(self.id, self.identity)
        async with translate_errors("listen for cancels"):
            self._cancels = await self.board.nc.subscribe(trail_filter("task.cancelled"), cb=self._on_cancel)
            await self.board.nc.flush()  # the server knows of the subscription from here on
        self._listening_since = utcnow()
        await self._throttle.start()
        await self._presence.start()
        self._background = [
            asyncio.create_task(self._keep_running("discover", self._discover), name=f"{self.id}:discover"),
            asyncio.create_task(
                self._keep_running("relay schedules", self.board.relay_schedules), name=f"{self.id}:relay"
            ),
        ]
        if self._metrics_server is not None:
            try:
                await self._metrics_server.start()
            except BaseException:
                await self._shutdown()  # a port in use: leave nothing running behind the error
                raise
        log.info(
            "agent.started",
            agent=self.id,
            capabilities=sorted(self.capabilities),
            capacity=self.capacity,
            metrics=self.metrics_url,
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
        with stopping_on_signals(self.stop):
            await self._stopped.wait()

    async def _shutdown(self) -> None:
        # Stop pulling first, so no new work arrives while we drain.
        await cancel_and_wait([*self._pullers.values(), *self._background])
        self._pullers.clear()
        if self._runners:
            _, pending = await asyncio.wait(set(self._runners), timeout=self.shutdown_grace)
            await cancel_and_wait(pending)  # each runner releases its lease and hands the ticket back
        if self._cancels is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._cancels.unsubscribe()
        await self._throttle.stop()
        await self._presence.stop()
        if self._metrics_server is not None:
            await self._metrics_server.stop()  # last: a final scrape still sees the drain
        log.info("agent.stopped", agent=self.id)

    # ----------------------------------------------------------------- pulling

    async def _keep_running(self, what: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the agent's background loops for its whole life.

        A loop that fails (a server unreachable for longer than the library waits, a bug) is logged
        and restarted, rather than leaving an agent that looks alive but no longer pulls.
        """
        while True:
            try:
                await loop()
                return
            except Exception as exc:
                log.error("agent.loop_failed", agent=self.id, loop=what, error=repr(exc))
                if self.board.nc.is_closed:  # closed for good: nothing to come back to
                    return
                await asyncio.sleep(_RETRY_BACKOFF_S)

    async def _discover(self) -> None:
        """Start a pull loop for every route (existing or future) whose requirements we meet."""
        async for route in self.board.routes.watch():
            self._routes[route.name] = route
            self._maybe_pull(route)

    def _maybe_pull(self, route: Route) -> None:
        if route.name not in self._pullers and matching.can_serve_route(self.capabilities, route.requires):
            self._pullers[route.name] = asyncio.create_task(
                self._keep_running(f"pull {route.name}", lambda: self._pull(route.name)),
                name=f"{self.id}:pull:{route.name}",
            )

    async def _lane(self, stack: contextlib.AsyncExitStack, route: str, *, express: bool) -> Puller:
        # Another client may have registered the route without its consumer (README wire format).
        await self.board.routes.ensure_consumer(route, express=express)
        consumer = work_consumer(route, express=express)
        return await stack.enter_async_context(Puller(self.board.nc, WORK_STREAM, consumer))

    async def _pull(self, route: str) -> None:
        """Take tickets of ``route`` while there is room: its express lane first, once it has one."""
        async with contextlib.AsyncExitStack() as stack:
            normal = await self._lane(stack, route, express=False)
            express: Puller | None = None
            while True:
                await self._room.wait()
                held = self._throttle.held_for(requires_of(route))
                if held > 0:
                    # Rate-limited (swarm-wide, or the window is full): pull none of this work
                    # until the known time it may start again, rather than take and hand back.
                    await asyncio.sleep(held)
                    continue
                msg = None
                if self._routes[route].express:
                    express = express or await self._lane(stack, route, express=True)
                    # A short look: the server answers at once when the lane holds a ticket.
                    msg = await fetch_patiently(express, _EXPRESS_LOOK_S)
                if msg is None:
                    # With an express lane, wait briefly here, so an express ticket arriving
                    # while we are idle is looked at again soon.
                    msg = await fetch_patiently(normal, _EXPRESS_IDLE_S if express else _FETCH_TIMEOUT_S)
                if msg is None:
                    continue
                if len(self._runners) >= self.capacity:
                    await msg.nak()  # another route's loop filled the last slot meanwhile
                    continue
                self._start_runner(msg)

    def _start_runner(self, msg: Msg) -> None:
        runner = asyncio.create_task(self._work(msg), name=f"{self.id}:work")
        self._runners.add(runner)
        runner.add_done_callback(self._runner_done)
        self._presence.changed()
        if len(self._runners) >= self.capacity:
            self._room.clear()

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        self._runners.discard(runner)
        self._room.set()
        self._presence.changed()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("agent.runner_crashed", agent=self.id, error=repr(runner.exception()))

    # ----------------------------------------------------------------- working

    async def _work(self, msg: Msg) -> None:
        received_ns = time.time_ns()  # the attempt's span starts when the ticket arrived
        ticket = parse_or_none(Ticket, msg.data, where=msg.subject)
        if ticket is None:
            await msg.term()  # never valid: redelivering it would only loop
            seq = msg.metadata.sequence.stream
            await self.board.trail.emit(
                TrailEvent(kind="corrupt.ticket", ref=str(seq), agent=self.id, data={"subject": msg.subject})
            )
            return
        delivered = msg.metadata.num_delivered
        reputation = self.board.reputation
        try:
            if self._stepping_aside(ticket.task_id) or (
                delivered == 1 and await self._defers_to_others(ticket)
            ):
                await msg.nak(delay=self.decline_backoff)
                return
            taking = await self._throttle.take(requires_of(ticket.route))
            if taking.wait > 0:  # no room under a shared limit: back when there will be, not an attempt
                await msg.nak(delay=taking.wait)
                return
            probation = delivered >= reputation.config.probation_after
            claim_ns = time.time_ns()
            outcome = await self.board.take(
                ticket, msg, self.id, probation=probation, trust_ticket=self._trusts(ticket, msg)
            )
        except CorruptEntry as exc:
            # Garbage with no valid revision left to restore: nothing to work on, nothing to loop.
            log.error("task.unrecoverable", agent=self.id, task_id=ticket.task_id, error=str(exc))
            await self._throttle.give_back(taking)
            await msg.term()
            return
        if isinstance(outcome, Taken):
            await self._throttle.give_back(taking)  # no work of ours: the request goes back
            await self._settle_ticket(msg, outcome)
            return
        lease = outcome
        trace = tracing.attempt(lease.task, self.id, started_ns=received_ns)
        trace.claimed(claim_ns, time.time_ns(), token=lease.token, deferred=not lease.claimed)
        self.metrics.count("claimed", lease.task)
        try:
            await self._serve(msg, lease, trace)
        finally:
            trace.end()

    async def _serve(self, msg: Msg, lease: Lease, trace: TaskTrace) -> None:
        """Decide on a claimed task, then run its handler (or decline it)."""
        handler = self._handlers.get(lease.task.kind)
        verdict = self._decide(self.specs, self.load - 1, self.capacity, lease.task)
        if handler is None:
            verdict = matching.Verdict(False, f"no handler for kind {lease.task.kind!r}")
        if not verdict.accept:
            await self._decline(msg, lease, verdict.reason, trace)
            return
        assert handler is not None
        try:
            await self._run_handler(msg, lease, handler, trace)
        except asyncio.CancelledError:
            # Shutdown past the grace period: give the task back so another agent takes it now.
            # (Awaiting here is fine: the cancellation has been delivered. If this is cancelled
            # again, or fails, the lease simply expires on the server.)
            try:
                await self._give_back(msg, lease, trace)
            except (AntsError, nats.errors.Error) as exc:
                log.warning("task.give_back_failed", agent=self.id, task_id=lease.task_id, error=str(exc))
            raise

    def _ended(self, lease: Lease, trace: TaskTrace, outcome: Outcome, error: str | None = None) -> None:
        """Count how an attempt ended, and say so on its trace."""
        self.metrics.count(outcome, lease.task)
        trace.outcome(outcome, error)

    async def _cancelled_while_running(self, msg: Msg, lease: Lease, trace: TaskTrace) -> None:
        """The handler was stopped by a cancel event: ack the ticket if the record says so (the
        task is finished), else the event lied (anyone can publish one) and the task goes back."""
        record = await self.board.get(lease.task_id)
        if record.status.terminal:
            log.info("task.cancel_obeyed", agent=self.id, task_id=lease.task_id)
            self._ended(lease, trace, "cancelled")
            await msg.ack()
            return
        log.warning(
            "task.cancel_unconfirmed", agent=self.id, task_id=lease.task_id, status=record.status.value
        )
        await self._give_back(msg, lease, trace)

    async def _decline(
        self, msg: Msg, lease: Lease, reason: str, trace: TaskTrace, spent: Usage | None = None
    ) -> None:
        log.info("task.declined", agent=self.id, task_id=lease.task_id, reason=reason)
        self._ended(lease, trace, "declined", reason)
        await self.board.release(lease, declined=reason, usage=spent)
        # Handed back at once, the ticket goes to an agent already waiting (our own pull comes
        # later); should it come back to us, we hold it back for ``decline_backoff``.
        self._declined.note(lease.task_id, self.decline_backoff)
        await msg.nak()

    def _stepping_aside(self, task_id: str) -> bool:
        """Whether this agent declined ``task_id`` less than ``decline_backoff`` seconds ago."""
        return task_id in self._declined

    async def _give_back(self, msg: Msg, lease: Lease, trace: TaskTrace) -> None:
        self._ended(lease, trace, "released")
        await self.board.release(lease)
        await msg.nak()

    async def _defers_to_others(self, ticket: Ticket) -> bool:
        """On a fresh ticket, an agent with a poor record lets better ones go first."""
        # The route names the required capabilities: no need to read the task for them.
        scores = await self.board.reputation.scores(self.id, requires_of(ticket.route))
        return min(scores.values()) < self.board.reputation.config.prefer_above

    async def _settle_ticket(self, msg: Msg, taken: Taken) -> None:
        if taken.reason in ("held", "not_yet", "waiting"):
            # Look again about when the holder's lease would expire (one check per TTL, not a
            # herd), when the task may start, or when its question times out: the server holds
            # the ticket until then.
            await msg.nak(delay=(taken.retry_after or 0.0) + 0.05)
        elif taken.reason == "quarantined":
            log.info("task.refused", agent=self.id, task_id=taken.task_id, quarantined=taken.quarantined)
            await msg.nak(delay=self.decline_backoff)  # others first; probation comes with redeliveries
        else:  # finished, not ready, unknown, or a duplicate of the ticket its holder keeps
            await msg.ack()

    async def _run_handler(self, msg: Msg, lease: Lease, handler: Handler, trace: TaskTrace) -> None:
        ctx = TaskContext(lease.task, lease, self.board, answers=lease.answers)
        work = asyncio.create_task(
            self._call(handler, lease.task, ctx, trace), name=f"{self.id}:{lease.task_id}"
        )
        beat: asyncio.Task[None] | None = None
        self._running[lease.task_id] = (ctx, work)
        try:
            if not lease.claimed:
                # A handler done within ``claim_after`` costs no claim write and no holding task.
                await asyncio.wait({work}, timeout=self.board.config.claim_after)
            if not work.done():
                beat = asyncio.create_task(self._hold(msg, lease, ctx, work), name=f"{self.id}:hold")
            result = await work
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():
                await self._cancelled_while_running(msg, lease, trace)
                return
            if ctx.lease_lost.is_set():
                log.warning("task.abandoned", agent=self.id, task_id=lease.task_id, reason="lease lost")
                self._ended(lease, trace, "expired", "lease lost")
                return
            raise
        except AskingForInput as asking:
            await self._park(msg, lease, trace, asking, ctx.spent)
            return
        except RateLimited as exc:
            await self._rate_limited(msg, lease, trace, exc, ctx.spent)
            return
        except Decline as exc:
            await self._decline(msg, lease, str(exc) or "declined by handler", trace, ctx.spent)
            return
        except NonRetryable as exc:
            await self._finish(msg, lease, trace, ctx.spent, error=f"NonRetryable: {exc}", retry=False)
            return
        except Exception as exc:  # a handler's failure is the task's failure, not ours
            await self._finish(msg, lease, trace, ctx.spent, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._running.pop(lease.task_id, None)
            await cancel_and_wait([work] if beat is None else [beat, work])
            current = asyncio.current_task()
            if ctx.spent.tokens and not (current is not None and current.cancelling()):
                await self._charge(lease, ctx.spent)  # not while shutting down: give the task back first
        await self._finish(msg, lease, trace, ctx.spent, result=result)

    async def _charge(self, lease: Lease, spent: Usage) -> None:
        """Count the tokens a handler reported against the token limits of its capabilities."""
        try:
            await self._throttle.charge(lease.task.requires, spent.tokens)
        except (AntsError, nats.errors.Error) as exc:  # the window errs towards letting work through
            log.warning("limit.charge_failed", agent=self.id, task_id=lease.task_id, error=str(exc))

    async def _rate_limited(
        self, msg: Msg, lease: Lease, trace: TaskTrace, exc: RateLimited, spent: Usage
    ) -> None:
        """A provider's limit was met: hold the task's capabilities back, swarm-wide, and give
        the task back for then (not an attempt)."""
        try:
            await self.board.release(lease, reason=str(exc), usage=spent)
        except LeaseLost:  # expired or cancelled meanwhile: nothing of ours to give back
            self._ended(lease, trace, "expired", "lease lost")
            return
        self._ended(lease, trace, "rate_limited", str(exc))
        await msg.nak(delay=exc.retry_after)
        try:  # after the task is back: holding the others back is worth less than that
            await self._throttle.hold(lease.task.requires, exc.retry_after, str(exc))
        except (AntsError, nats.errors.Error) as error:
            log.warning("limit.hold_failed", agent=self.id, task_id=lease.task_id, error=str(error))

    async def _park(
        self, msg: Msg, lease: Lease, trace: TaskTrace, asking: AskingForInput, spent: Usage
    ) -> None:
        """The handler asked a question: park the task, and hand the ticket back to the server
        with the question's timeout as the delay (it comes back then, to fail the task if nobody
        answered; an answer announces a ticket of its own)."""
        try:
            await self.board.ask(lease, asking.question, timeout=asking.timeout, usage=spent)
        except LeaseLost:  # expired or cancelled meanwhile: nothing of ours to park
            self._ended(lease, trace, "expired", "lease lost")
            return
        except InvalidTask as exc:  # a question the board refuses: the handler's own failure
            await self._finish(msg, lease, trace, spent, error=f"{type(exc).__name__}: {exc}")
            return
        log.info("task.asked", agent=self.id, task_id=lease.task_id, timeout=asking.timeout)
        self._ended(lease, trace, "asked", asking.question)
        await msg.nak(delay=asking.timeout)

    async def _on_cancel(self, msg: Msg) -> None:
        """A ``task.cancelled`` event: stop the handler of that task, if it runs here, and remember
        the news for a ticket of it still on its way."""
        event = parse_or_none(TrailEvent, msg.data, where=msg.subject)
        if event is None:
            return
        self._cancelled.note(event.ref, _CANCEL_NEWS_S)
        running = self._running.get(event.ref)
        if running is not None:
            ctx, work = running
            ctx.cancelled.set()  # first, so cooperative code sees why it is being cancelled
            work.cancel()

    def _trusts(self, ticket: Ticket, msg: Msg) -> bool:
        """Whether the ticket's copy of the record can stand for it: not when the task was said to
        be cancelled, nor when the ticket is older than this agent's ear for cancels."""
        if ticket.task_id in self._cancelled:
            return False
        since = self._listening_since
        published = msg.metadata.timestamp
        # (Server time against ours: a clock behind the server's trusts tickets published up to
        # the difference before we listened; a cancel in that gap costs a run whose result the
        # board rejects.)
        return since is not None and published is not None and published > since

    async def _call(self, handler: Handler, task: Task, ctx: TaskContext, trace: TaskTrace) -> JsonValue:
        """Run ``handler`` (in its own asyncio task, so the handler span is current in it) and
        count its run: its duration, and whether it failed."""
        start = time.perf_counter_ns()
        error: str | None = None
        try:
            with trace.handling(not_errors=(Decline,)):
                return await self._invoke(handler, task, ctx)
        except Decline:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.metrics.handled(task.kind, time.perf_counter_ns() - start, error)

    async def _invoke(self, handler: Handler, task: Task, ctx: TaskContext) -> JsonValue:
        if task.payload_ref is not None:  # the handler sees the payload, wherever it is kept
            try:
                payload = await self.board.payload_of(task)
            except (ArtifactNotFound, CorruptEntry) as exc:
                raise NonRetryable(f"cannot read the payload: {exc}") from exc
            task = ctx.task = task.model_copy(update={"payload": payload, "payload_ref": None})
        limit = task.timeout if task.timeout is not None else self.handler_timeout
        try:
            if limit is None:
                return await handler(task, ctx)
            try:
                async with asyncio.timeout(limit):
                    return await handler(task, ctx)
            except TimeoutError:
                raise TimeoutError(f"handler exceeded {limit}s") from None
        except BaseExceptionGroup as group:
            # ``ctx.ask`` inside a TaskGroup arrives wrapped in a group: it still parks the task.
            asking = group.subgroup(AskingForInput)
            if asking is None:
                raise
            raise _first_leaf(asking) from None

    async def _hold(self, msg: Msg, lease: Lease, ctx: TaskContext, work: asyncio.Task[JsonValue]) -> None:
        """Keep the claim while the handler runs: write a deferred claim (the handler has run for
        ``claim_after`` by now), then heartbeat."""
        if not lease.claimed:
            try:
                await self.board.confirm(lease)
            except LeaseLost:
                ctx.lease_lost.set()
                work.cancel()
                return
            except (ServerUnavailable, nats.errors.Error) as exc:  # the first heartbeat tries again
                log.warning("task.claim_write_failed", agent=self.id, task_id=lease.task_id, error=str(exc))
                self.metrics.heartbeat_failed()
        await self._heartbeat(msg, lease, ctx, work)

    async def _heartbeat(
        self, msg: Msg, lease: Lease, ctx: TaskContext, work: asyncio.Task[JsonValue]
    ) -> None:
        interval = lease.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.board.heartbeat(lease)  # also extends the ticket's ack wait
            except LeaseLost:
                ctx.lease_lost.set()
                work.cancel()
                return
            except (ServerUnavailable, nats.errors.Error) as exc:
                log.warning("lease.heartbeat_failed", agent=self.id, task_id=lease.task_id, error=str(exc))
                self.metrics.heartbeat_failed()
                if self.board.nc.is_closed:  # no reconnect will come: the lease is as good as gone
                    ctx.lease_lost.set()
                    work.cancel()
                    return

    async def _finish(
        self,
        msg: Msg,
        lease: Lease,
        trace: TaskTrace,
        spent: Usage,
        *,
        result: JsonValue = None,
        error: str | None = None,
        retry: bool = True,
    ) -> None:
        """Record the outcome, retrying while the server is unreachable and the lease may live; a
        failure to be retried comes back after the task's backoff (the server holds the ticket)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + lease.ttl
        with trace.finishing("complete" if error is None else "fail"):
            while True:
                try:
                    if error is None:
                        record = await self.board.complete(lease, result, usage=spent)
                    else:
                        record = await self.board.fail(lease, error, retry=retry, usage=spent)
                    break
                except LeaseLost:
                    log.warning(
                        "task.late_result_rejected", agent=self.id, task_id=lease.task_id, token=lease.token
                    )
                    self._ended(lease, trace, "expired", "late result rejected")
                    return
                except ServerUnavailable:
                    if loop.time() > give_up:
                        raise
                    await asyncio.sleep(_RETRY_BACKOFF_S)
        self._ended(lease, trace, "completed" if error is None else "failed", error)
        if record.status.terminal:
            await msg.ack()
        else:
            failures = sum(1 for a in record.attempts if a.outcome == "failed")
            await msg.nak(delay=record.task.retry.delay(failures))
