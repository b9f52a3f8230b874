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
from types import TracebackType
from typing import Self

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from . import matching, tracing
from ._aio import cancel_and_wait, stopping_on_signals
from ._pull import Puller, fetch_patiently
from ._version import __version__
from .attempt import RETRY_BACKOFF_S, Crew, Declined, RunningAttempt
from .board import NotTaken, TaskBoard
from .cancels import CancelNews
from .context import Handler
from .errors import (
    AntsError,
    CorruptEntry,
    ServerUnavailable,
)
from .identity import Identity
from .log import get_logger
from .metrics import AgentMetrics, MetricsServer
from .models import (
    FEATURES,
    AgentCard,
    CapabilitySpec,
    Route,
    Task,
    Ticket,
    TrailEvent,
    lacking,
    parse_or_none,
)
from .names import ID_RULE, WORK_STREAM, is_valid_id, requires_of, work_consumer
from .presence import Presence, as_specs
from .reach import Reach
from .throttle import Reservation, Throttle

log = get_logger("agent")

Decider = Callable[[tuple[CapabilitySpec, ...], int, int, Task], matching.Verdict]
"""``decide(capabilities, load, capacity, task)``: an agent's own rule for accepting a task."""

_FETCH_TIMEOUT_S = 2.0
_EXPRESS_LOOK_S = 0.05
"""How long a look at an express lane waits (a lane holding a ticket answers well within it)."""
_EXPRESS_IDLE_S = 0.5
"""Longest an express ticket waits for an idle agent (the normal lane's long poll, when both exist)."""
CATCH_ALL = "*"
"""The kind of a catch-all handler (``agent.handler("*")``): it takes tasks of every kind without a
handler of their own, and the agent's card then names no kinds."""


class Handlers:
    """An agent's handlers, by the kind of task each handles (``CATCH_ALL`` for every other kind)."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Handler] = {}

    def add(self, kind: str, handler: Handler) -> None:
        """Handle tasks of ``kind`` with ``handler`` (instead of the one it had, if any)."""
        self._by_kind[kind] = handler

    def for_kind(self, kind: str) -> Handler | None:
        """The handler of ``kind``, else the catch-all, else None (the task is declined)."""
        return self._by_kind.get(kind) or self._by_kind.get(CATCH_ALL)

    @property
    def kinds(self) -> frozenset[str] | None:
        """The kinds there are handlers for (None: any, with a catch-all handler)."""
        return None if CATCH_ALL in self._by_kind else frozenset(self._by_kind)


async def keep_running(what: str, loop: Callable[[], Awaitable[None]], nc: Client, agent_id: str) -> None:
    """Run ``loop``, one of an agent's background loops, for the agent's whole life.

    A loop that fails (a server unreachable for longer than the library waits, a bug) is logged and
    restarted, rather than leaving an agent that looks alive but no longer pulls; once ``nc`` is
    closed for good there is nothing to come back to.
    """
    while True:
        try:
            await loop()
            return
        except Exception as exc:
            log.error("agent.loop_failed", agent=agent_id, loop=what, error=repr(exc))
            if nc.is_closed:
                return
            await asyncio.sleep(RETRY_BACKOFF_S)


def ticket_delay(not_taken: NotTaken, backoff: float) -> float | None:
    """How long the ticket of a task not taken waits before it comes back (None: it is done with,
    to be acked), with ``backoff`` the agent's pause for tasks it leaves to others."""
    if not_taken.reason in ("held", "not_yet", "waiting"):
        # Look again about when the holder's lease would expire (one check per TTL, not a herd),
        # when the task may start, or when its question times out: the server holds the ticket
        # until then.
        return (not_taken.retry_after or 0.0) + 0.05
    if not_taken.reason == "quarantined":
        return backoff  # others first; probation comes with redeliveries
    return None  # finished, not ready, unknown, or a duplicate of the ticket its holder keeps


class Agent:
    """An autonomous worker. Use as ``async with Agent(board, name=..., capabilities=[...]) as agent``."""

    attempt_class: type[RunningAttempt] = RunningAttempt
    features: frozenset[str] = FEATURES
    """Protocol features this agent understands: a task that needs another (``Task.needs``) it
    declines, freely (a newer version's agent extends it)."""
    """What runs each claim this agent wins (a subclass changes how attempts behave)."""

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
            # (An id made from the name is the name, '-' and 8 hex digits: the name is what to mend.)
            given = f"agent id {agent_id!r}" if agent_id else f"agent name {name!r}"
            raise AntsError(f"invalid {given}: use {ID_RULE}")
        self.specs = as_specs(capabilities)
        self.capacity = capacity
        self.shutdown_grace = shutdown_grace
        self.decline_backoff = decline_backoff
        self._decide = decide
        self._handlers = Handlers()
        self._routes: dict[str, Route] = {}
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self.reach = Reach(board.nc, self.id)
        """Whether this agent's pulls reach the board (lost and found are each logged once)."""
        self.identity = identity or Identity.generate()
        """The key this agent signs its trail events with; its public half is on the card."""
        self.metrics = AgentMetrics(
            agent_id=self.id, name=name, capacity=capacity, load=lambda: len(self._runners)
        )
        """This agent's counters (claims, outcomes, handler durations ...), in its own registry."""
        self._metrics_server = (
            None if metrics_port is None else MetricsServer(self.metrics.registry, metrics_port)
        )
        self._offer_changed = asyncio.Event()
        """Set when what the agent offers changed, or it (re)joined: unroutable tasks may be for it."""
        self._offer_changed.set()
        self._presence = Presence(
            board, self.card, self.identity, self.metrics.work, on_rejoin=self._offer_changed.set
        )
        self._throttle = Throttle(board, self.id)
        self._declined = Declined()
        self._crew = Crew(
            board,
            self.id,
            self.metrics,
            self._throttle,
            handler_timeout,
            self._offer,
            self._declined,
            self._done_with,
        )
        self._runners: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, Puller] = {}
        """The lane each ticket in hand came from, by its delivery's reply subject."""
        self._acks_due: dict[Puller, list[Msg]] = {}
        """Per lane whose pull loop waits for room: tickets done with, acknowledged with its next
        pull (``+NXT``: one message for the acknowledgement and the request)."""
        self._background: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._stopped = asyncio.Event()
        self._running: dict[str, RunningAttempt] = {}
        """Attempts whose handlers are at work, by task id (so a cancel reaches them)."""
        self._cancels = CancelNews(board.trail, self._cancel)
        self._announced_offer = ""
        """The offer of the card last announced with its capabilities."""

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator registering the coroutine that handles tasks of ``kind``."""

        def register(func: Handler) -> Handler:
            self._handlers.add(kind, func)
            self._offer_changed.set()  # (before the start, the first announcement says it)
            return func

        return register

    @property
    def kinds(self) -> frozenset[str] | None:
        """Task kinds this agent has handlers for (None: any, with a catch-all handler)."""
        return self._handlers.kinds

    @property
    def handler_timeout(self) -> float | None:
        """Seconds a handler may run when its task sets no ``timeout`` (None: no limit)."""
        return self._crew.handler_timeout

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
            kinds=None if self.kinds is None else tuple(sorted(self.kinds)),
            load=self.load,
            capacity=self.capacity,
            software=__version__,
            public_key=self.identity.public_key,
        )

    async def update_capabilities(self, capabilities: Iterable[str | CapabilitySpec]) -> None:
        """Change what this agent can do: re-announce, and pull from exactly the routes it now serves."""
        self.specs = as_specs(capabilities)
        await self._announce_offer()
        self._offer_changed.set()
        unserved = [
            name for name in self._pullers if not set(self._routes[name].requires) <= self.capabilities
        ]
        await cancel_and_wait([self._pullers.pop(name) for name in unserved])
        for route in self._routes.values():
            self._maybe_pull(route)

    async def forget_declines(self, task_ids: Iterable[str] | None = None) -> list[str]:
        """Take back this agent's declines of ``task_ids`` (None: all it remembers), e.g. when it
        declined for want of time and now has some: those tasks may come to it again, and those
        set aside as unroutable meanwhile are announced again (their ids are returned)."""
        return await self.board.reroute(self.card(), forgiven=self._declined.forget(task_ids))

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._stopped.clear()  # (entered again after an exit: run() serves again until stopped)
        self.board.sign_as(self.id, self.identity)
        await self._cancels.start()
        await self._throttle.start()
        await self._presence.start()
        self._announced_offer = self.card().offer
        self._background = [
            self._start("discover", self._discover, "discover"),
            self._start("relay schedules", self.board.relay_schedules, "relay"),
            self._start("reroute", self._reroute, "reroute"),
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
        """Serve until ``stop()`` or SIGINT/SIGTERM, inside ``async with agent:`` (which starts
        the work and shuts it down gracefully)."""
        if not self._background:
            raise AntsError(f"agent {self.id} is not started: run() serves inside 'async with agent:'")
        with stopping_on_signals(self.stop):
            await self._stopped.wait()

    async def _shutdown(self) -> None:
        # Stop pulling first, so no new work arrives while we drain.
        await cancel_and_wait([*self._pullers.values(), *self._background])
        self._pullers.clear()
        self._background = []  # (not started: run() says so)
        self._stopped.set()  # a run() still waiting returns: nothing serves any more
        if self._runners:
            _, pending = await asyncio.wait(set(self._runners), timeout=self.shutdown_grace)
            await cancel_and_wait(pending)  # each runner releases its lease and hands the ticket back
        await self._cancels.stop()
        await self._throttle.stop()
        await self._presence.stop()
        if self._metrics_server is not None:
            await self._metrics_server.stop()  # last: a final scrape still sees the drain
        log.info("agent.stopped", agent=self.id)

    # ----------------------------------------------------------------- pulling

    def _start(self, what: str, loop: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
        """Start one of the agent's background loops, kept running for its whole life."""
        return asyncio.create_task(keep_running(what, loop, self.board.nc, self.id), name=f"{self.id}:{name}")

    async def _discover(self) -> None:
        """Start a pull loop for every route (existing or future) whose requirements we meet."""
        async for route in self.board.routes.watch():
            self._routes[route.name] = route
            self._maybe_pull(route)

    async def _reroute(self) -> None:
        """Whenever the agent's offer changes (and once it has joined): bring back the unroutable
        tasks it could take (its declines made with another offer no longer stand)."""
        while True:
            await self._offer_changed.wait()
            self._offer_changed.clear()
            try:
                card = self.card()
                if card.offer != self._announced_offer:
                    await self._announce_offer()  # a handler registered since the start
                brought = await self.board.reroute(card)
            except BaseException:
                self._offer_changed.set()  # not done: the restarted loop tries again
                raise
            if brought:
                log.info("agent.rerouted", agent=self.id, tasks=brought)

    async def _announce_offer(self) -> None:
        """Announce the card at once, with an ``agent.changed`` mark: what it offers changed."""
        await self._presence.capabilities_changed()
        self._announced_offer = self.card().offer

    def _offer(self) -> str:
        return self.card().offer

    def _maybe_pull(self, route: Route) -> None:
        if route.name not in self._pullers and matching.can_serve_route(self.capabilities, route.requires):
            pull = self._start(f"pull {route.name}", lambda: self._pull(route.name), f"pull:{route.name}")
            self._pullers[route.name] = pull

    async def _lane(self, stack: contextlib.AsyncExitStack, route: str, *, express: bool) -> Puller:
        # Another client may have registered the route without its consumer (docs/protocol.md).
        await self.board.routes.ensure_consumer(route, express=express)
        consumer = work_consumer(route, express=express)
        return await stack.enter_async_context(Puller(self.board.nc, WORK_STREAM, consumer))

    async def _pull(self, route: str) -> None:
        """Take tickets of ``route`` while there is room: its express lane first, once it has one."""
        async with contextlib.AsyncExitStack() as stack:
            normal = await self._lane(stack, route, express=False)
            express: Puller | None = None
            lanes = [normal]
            try:
                while True:
                    await self._wait_for_room(lanes)
                    held = self._throttle.held_for(requires_of(route))
                    if held > 0:
                        # Rate-limited (swarm-wide, or the window is full): pull none of this work
                        # until the known time it may start again, rather than take and hand back.
                        await self._ack_due(lanes)
                        await asyncio.sleep(held)
                        continue
                    msg, lane = None, normal
                    if self._routes[route].express:
                        if express is None:
                            express = await self._lane(stack, route, express=True)
                            lanes.append(express)
                        # A short look: the server answers at once when the lane holds a ticket.
                        acking = await self._ack_due(lanes, but=express)
                        msg = await fetch_patiently(express, _EXPRESS_LOOK_S, self.reach, acking=acking)
                        lane = express
                    if msg is None:
                        lane = normal
                        # With an express lane, wait briefly here, so an express ticket arriving
                        # while we are idle is looked at again soon.
                        acking = await self._ack_due(lanes, but=normal)
                        msg = await fetch_patiently(
                            normal,
                            _EXPRESS_IDLE_S if express else _FETCH_TIMEOUT_S,
                            self.reach,
                            acking=acking,
                            batch=1 if express else self._free_share(),
                        )
                    if msg is None:
                        continue
                    if len(self._runners) >= self.capacity:
                        await msg.nak()  # another route's loop filled the last slot meanwhile
                        continue
                    self._start_runner(msg, lane)
            finally:
                await self._ack_due(lanes)

    def _free_share(self) -> int:
        """Tickets one request may ask for: this route's share of the free capacity (an
        agent holds no ticket it has no room for, so none waits in it while another is idle)."""
        free = self.capacity - len(self._runners)
        return max(1, free // max(1, len(self._pullers)))

    async def _wait_for_room(self, lanes: list[Puller]) -> None:
        """Wait until there is room for one more task; meanwhile, tickets done with are kept for
        the next pull of their lane (see ``_done_with``)."""
        if self._room.is_set():
            return
        for lane in lanes:
            self._acks_due.setdefault(lane, [])
        try:
            await self._room.wait()
        except BaseException:
            await self._ack_due(lanes)
            raise

    async def _ack_due(self, lanes: list[Puller], *, but: Puller | None = None) -> Msg | None:
        """Stop keeping acknowledgements for ``lanes``: send them now, but for one ticket of lane
        ``but``, returned for its next pull to carry."""
        carried = None
        for lane in lanes:
            due = self._acks_due.pop(lane, None) or []
            if lane is but and due:
                carried = due.pop()
            for msg in due:
                with contextlib.suppress(nats.errors.Error):  # redelivered: its record says finished
                    await msg.ack()
        return carried

    async def _done_with(self, msg: Msg) -> None:
        """Acknowledge the ticket of a task done with; when its lane's pull loop waits for room,
        with that loop's next pull instead (which comes as soon as the runner ends)."""
        lane = self._lanes.get(msg.reply)
        due = None if lane is None else self._acks_due.get(lane)
        if due is None:
            await msg.ack()
        else:
            due.append(msg)

    def _start_runner(self, msg: Msg, lane: Puller) -> None:
        runner = asyncio.create_task(self._work(msg), name=f"{self.id}:work")
        self._runners.add(runner)
        self._lanes[msg.reply] = lane
        runner.add_done_callback(lambda done: self._runner_done(done, msg.reply))
        self._presence.changed()
        if len(self._runners) >= self.capacity:
            self._room.clear()

    def _runner_done(self, runner: asyncio.Task[None], reply: str) -> None:
        self._runners.discard(runner)
        self._lanes.pop(reply, None)
        self._room.set()
        self._presence.changed()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("agent.runner_crashed", agent=self.id, error=repr(runner.exception()))

    # ----------------------------------------------------------------- working

    async def _work(self, msg: Msg) -> None:
        """Judge one ticket: step aside, wait, or claim; a claim won becomes a ``RunningAttempt``."""
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
        reservation: Reservation | None = None
        try:
            if self._declined.stands(ticket.task_id, self._offer):
                # Declined already: unless everyone able has declined it by now (then it is set
                # aside), others may take it; a task that waits for no taker is judged as usual.
                aside = await self.board.reconsider(ticket.task_id, by=self.id)
                if aside != "take":
                    await (msg.ack() if aside is None else msg.nak(delay=max(aside, self.decline_backoff)))
                    return
            if delivered == 1 and await self._defers_to_others(ticket):
                await msg.nak(delay=self.decline_backoff)
                return
            reservation = await self._throttle.reserve(requires_of(ticket.route))
            if reservation.wait > 0:  # no room under a shared limit: back when there will be, not an attempt
                await msg.nak(delay=reservation.wait)
                return
            probation = delivered >= reputation.config.probation_after
            claim_ns = time.time_ns()
            claim = await self.board.take(
                ticket, msg, self.id, probation=probation, trust_ticket=self._cancels.trusts(ticket, msg)
            )
        except ServerUnavailable as exc:
            # A fault the swarm recovers from: the ticket is redelivered when its ack wait ends.
            log.warning("ticket.judging_failed", agent=self.id, task_id=ticket.task_id, error=str(exc))
            if reservation is not None:
                with contextlib.suppress(ServerUnavailable):  # the window then over-counts a little
                    await self._throttle.refund(reservation)
            return
        except CorruptEntry as exc:
            # Garbage with no valid revision left to restore: nothing to work on, nothing to loop.
            log.error("task.unrecoverable", agent=self.id, task_id=ticket.task_id, error=str(exc))
            if reservation is not None:
                await self._throttle.refund(reservation)
            await msg.term()
            return
        if isinstance(claim, NotTaken):
            await self._throttle.refund(reservation)  # no work of ours: the request goes back
            if claim.reason == "quarantined":
                log.info("task.refused", agent=self.id, task_id=claim.task_id, quarantined=claim.quarantined)
            delay = ticket_delay(claim, self.decline_backoff)
            await (msg.ack() if delay is None else msg.nak(delay=delay))
            return
        lease = claim
        trace = tracing.attempt(lease.task, self.id, started_ns=received_ns)
        trace.claimed(claim_ns, time.time_ns(), token=lease.token, deferred=not lease.claimed)
        self.metrics.count("claimed", lease.task)
        try:
            await self._serve(self.attempt_class(self._crew, msg, lease, trace))
        finally:
            trace.end()

    async def _serve(self, attempt: RunningAttempt) -> None:
        """Decide on a claimed task, then run its handler (or decline it)."""
        task = attempt.lease.task
        handler = self._handlers.for_kind(task.kind)
        missing = lacking(task.needs, self.features)
        if missing:
            verdict = matching.Verdict(
                False, f"needs {', '.join(missing)}, which ants-nats {__version__} lacks"
            )
        elif handler is None:
            verdict = matching.Verdict(False, f"no handler for kind {task.kind!r}")
        else:
            verdict = self._decide(self.specs, self.load - 1, self.capacity, task)
        if handler is None or not verdict.accept:
            await attempt.decline(verdict.reason, retry_after=verdict.retry_after)
            return
        self._running[attempt.task_id] = attempt
        try:
            await attempt.run(handler)
        except asyncio.CancelledError:
            # Shutdown past the grace period: give the task back so another agent takes it now.
            # (Awaiting here is fine: the cancellation has been delivered. If this is cancelled
            # again, or fails, the lease simply expires on the server.)
            await attempt.give_back_quietly()
            raise
        finally:
            self._running.pop(attempt.task_id, None)

    async def _defers_to_others(self, ticket: Ticket) -> bool:
        """On a fresh ticket, an agent with a poor record lets better ones go first."""
        # The route names the required capabilities: no need to read the task for them.
        scores = await self.board.reputation.scores(self.id, requires_of(ticket.route))
        return min(scores.values()) < self.board.reputation.config.prefer_above

    def _cancel(self, task_id: str) -> None:
        """``task_id`` was cancelled: stop its attempt, if it runs here."""
        running = self._running.get(task_id)
        if running is not None:
            running.cancel()
