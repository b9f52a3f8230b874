"""The gateway: each route it presents is a protocol agent, while live agents can take its work."""

from __future__ import annotations

import asyncio
import functools
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import nats.errors

from ants_nats import AntsError, TaskBoard, Throttle
from ants_nats._aio import cancel_and_wait, stopping_on_signals
from ants_nats.agent_protocol import host_sdk
from ants_nats.log import get_logger

from .prompts import Prompts
from .routes import DEFAULT_KIND, Coverage, RouteSpec, RouteStatus, queue_figures

if TYPE_CHECKING:
    from synadia_ai.agent_service import AgentService, PromptStream
    from synadia_ai.agents import Envelope

log = get_logger("agent_gateway")

DEFAULT_AGENT = "ants-nats"
DEFAULT_OWNER = "ants"
_RETRY_BACKOFF_S = 0.5


class AgentGateway:
    """Present routes of ``board`` as protocol agents while inside ``async with``.

    ``routes``: those to present, always (the operator named them: while no live agent can take
    their prompts, their heartbeats and ``status`` replies say ``live_agents: 0`` and why, in
    ``note``, and a prompt is answered 404 with that reason). None: every route on the board,
    each presented while a live agent can take its prompts (every capability of the route, and
    ``kind``) and withdrawn when none is left, once the prompts it serves have ended; discovery
    then finds only routes that work. ``agent`` and ``owner`` are the subject tokens (and
    ``metadata.agent`` / ``owner``) of every route; ``name`` is who the tasks say created them."""

    def __init__(
        self,
        board: TaskBoard,
        *,
        routes: Sequence[RouteSpec] | None = None,
        kind: str = DEFAULT_KIND,
        agent: str = DEFAULT_AGENT,
        owner: str = DEFAULT_OWNER,
        name: str = "agent-gateway",
        heartbeat_interval: int = 30,
        keepalive_interval: float = 20.0,
        max_prompts: int = 256,
        max_wait: float = 3600.0,
    ) -> None:
        self._host: ModuleType = host_sdk()
        # Checked here, not escaped (the SDK would base64 an odd token): subjects stay readable.
        if not re.fullmatch(r"[a-z0-9-]{1,63}", agent) or not re.fullmatch(r"[a-z0-9_-]{1,63}", owner):
            raise AntsError(f"invalid agent {agent!r} or owner {owner!r}: use a-z 0-9 - (and _ in owner)")
        self.board = board
        self.routes = None if routes is None else [spec.checked() for spec in routes]
        self.kind = kind
        self.agent = agent
        self.owner = owner
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        self.keepalive_interval = keepalive_interval
        self.max_prompts = max_prompts
        self.presented: dict[str, RouteSpec] = {}
        """The routes presented now, by instance name."""
        self._known: dict[str, RouteSpec] = {}
        """Every route that may be presented (the named ones, or the board's), by instance name."""
        self._unserved: dict[str, str | None] = {}
        """Why nobody can take the prompts of a known route, as last logged."""
        self._services: dict[str, AgentService] = {}
        self._queues: dict[str, tuple[int, int]] = {}
        """Each presented route's tickets waiting and held, as last measured."""
        self._following: Counter[str] = Counter()
        """Prompts in flight per route: a route goes only once they have ended (stopping its
        service would cut their streams)."""
        self._changed = asyncio.Event()
        """Set when what decides which routes are presented may have changed."""
        self._coverage = Coverage(board.directory, self._changed.set)
        self._throttle = Throttle(board, name)
        """What the swarm holds back: a prompt for such work is turned away (429)."""
        self._prompts = Prompts(board, self._coverage, self._throttle, creator=name, max_wait=max_wait)
        self._background: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> Self:
        try:
            await self._throttle.start()
            self._start("cards", self._coverage.watch)
            for spec in self.routes or ():
                self._learn(spec)
                await self._present(spec)
            self._start("status", self._keep_measuring)
            self._start("presenting", self._keep_presenting)
            if self.routes is None:
                self._start("routes", self._learn_routes)
        except BaseException:
            await self._shutdown()
            raise
        log.info("gateway.started", routes=sorted(self.presented), agent=self.agent, owner=self.owner)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to return."""
        self._stopped.set()

    async def run(self) -> None:
        """Serve until ``stop()`` or SIGINT/SIGTERM."""
        with stopping_on_signals(self.stop):
            await self._stopped.wait()

    async def _shutdown(self) -> None:
        await cancel_and_wait(self._background)
        self._background.clear()
        services, self._services = self._services, {}
        for service in services.values():  # cancels the prompts in flight, each ending with its terminator
            await service.stop()
        self.presented.clear()
        await self._throttle.stop()
        log.info("gateway.stopped")

    def _start(self, what: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` in the background for the gateway's whole life, again after a failure: the
        gateway must not look alive while it no longer learns of routes or agents."""

        async def keep() -> None:
            while True:
                try:
                    await loop()
                except Exception as exc:  # a server gone for longer than the library waits, a bug
                    log.error("gateway.loop_failed", loop=what, error=repr(exc))
                await asyncio.sleep(_RETRY_BACKOFF_S)

        self._background.append(asyncio.create_task(keep(), name=f"gateway:{what}"))

    # ----------------------------------------------------------------- which routes are presented

    async def _learn_routes(self) -> None:
        """Learn every route of the board, existing and future."""
        async for route in self.board.routes.watch():
            try:
                self._learn(RouteSpec(requires=route.requires, kind=self.kind).checked())
            except AntsError as exc:  # the other routes go on
                log.error("gateway.route_not_presented", route=route.name, error=str(exc))
            self._changed.set()

    def _learn(self, spec: RouteSpec) -> None:
        """Know ``spec`` as a route to present (another route with its instance name is an error:
        both would share one prompt subject)."""
        known = self._known.get(spec.instance)
        if known is not None and known.route != spec.route:
            raise AntsError(f"routes {known.route!r} and {spec.route!r} both have name {spec.instance!r}")
        self._known[spec.instance] = spec

    async def _keep_presenting(self) -> None:
        """Each time routes, cards or prompts in flight change: present the routes that should be,
        withdraw the others (one at a time, in this one task)."""
        pinned = {spec.instance for spec in self.routes or ()}
        while True:
            await self._changed.wait()
            self._changed.clear()
            for instance, spec in list(self._known.items()):
                reason = self._coverage.unserved(spec)
                if reason is not None and self._unserved.get(instance) != reason:
                    log.info("gateway.route_unserved", route=spec.route, reason=reason)
                self._unserved[instance] = reason
                wanted = instance in pinned or reason is None or self._following[instance] > 0
                try:
                    if wanted and instance not in self.presented:
                        await self._present(spec)
                    elif not wanted and instance in self.presented:
                        await self._withdraw(instance)
                except (AntsError, nats.errors.Error) as exc:  # tried again at the next change
                    log.error("gateway.route_not_presented", route=spec.route, error=str(exc))

    async def _present(self, spec: RouteSpec) -> None:
        """Register ``spec`` as a protocol agent."""
        # Figures first: the service beats as soon as it starts.
        self._queues[spec.instance] = await queue_figures(self.board.nc.jetstream(), spec.route)
        service: AgentService = self._host.AgentService(
            agent=self.agent,
            owner=self.owner,
            session_name=spec.instance,
            nc=self.board.nc,
            description=f"ants-nats route {spec.route}: each prompt is a {spec.kind!r} task for the swarm",
            heartbeat_interval_s=self.heartbeat_interval,
            keepalive_interval_s=self.keepalive_interval,
            extra_metadata={"ants_route": spec.route, "ants_kind": spec.kind},
            heartbeat_extras=functools.partial(self._extras, spec),
            max_concurrent_prompts=self.max_prompts,
        )
        service.on_prompt(functools.partial(self._on_prompt, spec))
        await service.start()
        self._services[spec.instance] = service
        self.presented[spec.instance] = spec
        log.info("gateway.route_presented", route=spec.route, subject=service.subject.prompt)

    async def _withdraw(self, instance: str) -> None:
        """Stop presenting ``instance`` (its prompts in flight are cancelled: see ``_following``)."""
        spec = self.presented.pop(instance)
        await self._services.pop(instance).stop()
        # Withdrawn means gone at the server: a discovery right after this finds it no more.
        await self.board.nc.flush()
        log.info("gateway.route_withdrawn", route=spec.route, reason=self._unserved.get(instance))

    async def _on_prompt(self, spec: RouteSpec, envelope: Envelope, stream: PromptStream) -> None:
        self._following[spec.instance] += 1
        try:
            await self._prompts.serve(spec, envelope, stream)
        finally:
            self._following[spec.instance] -= 1
            if self._unserved.get(spec.instance) is not None:
                self._changed.set()  # kept only for its prompts in flight: it may go now

    # ----------------------------------------------------------------- heartbeat extras

    def _extras(self, spec: RouteSpec) -> dict[str, Any]:
        """What the next heartbeat (or ``status`` reply) of ``spec`` carries, read as it is built."""
        waiting, held = self._queues.get(spec.instance, (0, 0))
        status = RouteStatus(
            route=spec.route,
            capabilities=list(spec.requires),
            kind=spec.kind,
            live_agents=self._coverage.able(spec),
            queue_depth=waiting,
            in_flight=held,
            note=self._coverage.unserved(spec),
        )
        return status.model_dump(exclude_none=True)

    async def _keep_measuring(self) -> None:
        """Measure each presented route's queue once a heartbeat interval (the live agents are
        current already: the directory is watched)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)  # a cadence (the SDK beats on its own timer)
            for instance, spec in list(self.presented.items()):
                self._queues[instance] = await queue_figures(self.board.nc.jetstream(), spec.route)
