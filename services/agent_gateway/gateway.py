"""The board's routes as agents of the Synadia Agent Protocol for NATS (v0.3).

Each presented capability route is a protocol agent (a NATS micro service named ``agents``,
prompt endpoint ``agents.prompt.<agent>.<owner>.<route>``, heartbeats on ``agents.hb...``), so
any protocol caller (``synadia-ai-agents``' ``discover()`` and ``prompt()``) can hand work to the
swarm without knowing it is one. A prompt becomes a task on the board; the caller's stream then
follows the task: its id, its progress reports as ``status`` chunks (``progress <fraction>
<note>``), and its result as the ``response``. An ``idempotency_key`` field in the envelope is the
task's id (or, when it is no valid id, derives it), so a caller that lost its stream prompts
again with the same key and follows the task already there: no work is done twice.

Errors are §9 statuses: an invalid envelope or task 400, no live agent offering the route's
capabilities 404, the key already naming a different task 409, work the swarm holds back after a
provider's rate limit 429 (the gateway follows the holds with a ``Throttle``), a task that
failed, died or was cancelled 500 with its error. Each heartbeat (and ``status`` reply) carries
the route's live capable agents and its queue depth.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import re
import sys
import uuid
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import nats.errors
import nats.js.errors
import pydantic
from pydantic import BaseModel, JsonValue

from ants_nats import (
    AgentCard,
    AgentProtocolError,
    AntsError,
    InvalidTask,
    RateLimited,
    Route,
    Task,
    TaskBoard,
    TaskExists,
    TaskFailed,
    TaskNotFound,
    Throttle,
    TrailEvent,
)
from ants_nats._aio import cancel_and_wait, stopping_on_signals
from ants_nats.agent_protocol import host_sdk, progress_status, response_text, sdk
from ants_nats.log import get_logger

from . import _common

if TYPE_CHECKING:
    from synadia_ai.agent_service import AgentService, PromptStream
    from synadia_ai.agents import Envelope

log = get_logger("agent_gateway")

DEFAULT_AGENT = "ants-nats"
DEFAULT_OWNER = "ants"
DEFAULT_KIND = "prompt"
IDEMPOTENCY_FIELD = "idempotency_key"
"""The envelope's extension field (§5.6) naming the task a prompt is."""
MAX_KEY_LENGTH = 1024

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""A task id (README, "Wire format"): a key that is one is the task's id as it is."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RETRY_BACKOFF_S = 0.5

# The route consumers' names on the work stream (README, "Wire format"): their counts are the
# route's queue.
_WORK_STREAM = "ANTS_WORK"


def _work_consumers(route: str) -> tuple[str, str]:
    return f"work_{route}", f"work_{route}_express"


@dataclass(frozen=True)
class RouteSpec:
    """A route to present: its required capabilities, the kind of the tasks its prompts become,
    and the instance name it has on the protocol's subjects."""

    requires: tuple[str, ...]
    kind: str = DEFAULT_KIND
    name: str | None = None

    @classmethod
    def parse(cls, text: str, *, kind: str = DEFAULT_KIND) -> RouteSpec:
        """``[NAME:]CAP[,CAP...]`` (``any`` for tasks that require nothing)."""
        name, _, caps = text.rpartition(":")
        requires = () if caps == "any" else tuple(c.strip() for c in caps.split(",") if c.strip())
        return cls(requires=requires, kind=kind, name=name or None).checked()

    def checked(self) -> RouteSpec:
        """This spec with its capabilities in canonical order; ``AntsError`` if one is invalid."""
        try:
            route = Route(requires=tuple(sorted(set(self.requires))))
            Task(id="check", kind=self.kind)
        except pydantic.ValidationError as exc:
            raise AntsError(f"invalid route {self.requires!r} or kind {self.kind!r}: {exc}") from exc
        if self.name is not None and not re.fullmatch(r"[a-z0-9_-]{1,63}", self.name):
            raise AntsError(f"invalid route name {self.name!r}: use 1-63 of a-z 0-9 _ -")
        return RouteSpec(requires=route.requires, kind=self.kind, name=self.name)

    @property
    def route(self) -> str:
        """The board's name of the route (capabilities sorted and ``=``-joined, or ``any``)."""
        return Route(requires=self.requires).name

    @property
    def instance(self) -> str:
        """Its name on the protocol's subjects: the given name, else the capabilities ``_``-joined."""
        return self.name or ("_".join(self.requires) if self.requires else "any")


class RouteStatus(BaseModel):
    """What a presented route's heartbeats and ``status`` replies carry beyond §8.3 (the spec
    invites queue depth and capability hints there)."""

    route: str
    capabilities: list[str]
    kind: str
    live_agents: int = 0
    """Live agents whose capabilities cover the route."""
    queue_depth: int = 0
    """Tickets waiting for an agent (both lanes)."""
    in_flight: int = 0
    """Tickets an agent holds (their tasks at work)."""


def task_id_for(key: str | None) -> str:
    """The task a prompt is: its idempotency key when that is a valid task id, else derived from
    the key (the same key, the same task), or a fresh id without a key."""
    if key is None:
        return f"prompt-{uuid.uuid4().hex}"
    if _TASK_ID.match(key):
        return key
    return f"prompt-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


class AgentGateway:
    """Present routes of ``board`` as protocol agents while inside ``async with``.

    ``routes``: those to present; None presents every route on the board, each as soon as it is
    registered. ``agent`` and ``owner`` are the subject tokens (and ``metadata.agent`` /
    ``owner``) of every route; ``name`` is who the tasks say created them."""

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
        self._sdk: ModuleType = sdk()
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
        self.max_wait = max_wait
        """Seconds a prompt follows its task at most (a task may wait long, e.g. for an answer)."""
        self.presented: dict[str, RouteSpec] = {}
        """The routes presented so far, by instance name."""
        self._status: dict[str, RouteStatus] = {}
        self._throttle = Throttle(board, name)
        """What the swarm holds back: a prompt for such work is turned away (429)."""
        self._services: list[AgentService] = []
        self._background: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> Self:
        try:
            await self._throttle.start()
            for spec in self.routes or ():
                await self._present(spec)
            self._background.append(asyncio.create_task(self._keep_refreshing(), name="gateway:status"))
            if self.routes is None:
                self._background.append(asyncio.create_task(self._present_all(), name="gateway:routes"))
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
        services, self._services = self._services, []
        for service in services:  # cancels the prompts in flight, each ending with its terminator
            await service.stop()
        await self._throttle.stop()
        log.info("gateway.stopped", routes=sorted(self.presented))

    # ----------------------------------------------------------------- presenting routes

    async def _present_all(self) -> None:
        """Present every route of the board, existing and future (watching again after a failure:
        the gateway must not look alive while it no longer learns of routes)."""
        while True:
            try:
                async for route in self.board.routes.watch():
                    await self._present_logged(RouteSpec(requires=route.requires, kind=self.kind))
            except (AntsError, nats.errors.Error) as exc:
                log.error("gateway.routes_watch_failed", error=str(exc))
                await asyncio.sleep(_RETRY_BACKOFF_S)

    async def _present_logged(self, spec: RouteSpec) -> None:
        try:
            await self._present(spec.checked())
        except (AntsError, nats.errors.Error) as exc:  # the other routes go on
            log.error("gateway.route_not_presented", route=spec.route, error=str(exc))

    async def _present(self, spec: RouteSpec) -> None:
        """Register ``spec`` as a protocol agent (once; another route with its instance name is an
        error: both would share one prompt subject)."""
        known = self.presented.get(spec.instance)
        if known is not None:
            if known.route != spec.route:
                raise AntsError(f"routes {known.route!r} and {spec.route!r} both have name {spec.instance!r}")
            return
        # Figures first: the service beats as soon as it starts.
        self._status[spec.instance] = await self._measure(spec, await self.board.directory.cards())
        service: AgentService = self._host.AgentService(
            agent=self.agent,
            owner=self.owner,
            session_name=spec.instance,
            nc=self.board.nc,
            description=f"ants-nats route {spec.route}: each prompt is a {spec.kind!r} task for the swarm",
            heartbeat_interval_s=self.heartbeat_interval,
            keepalive_interval_s=self.keepalive_interval,
            extra_metadata={"ants_route": spec.route, "ants_kind": spec.kind},
            heartbeat_extras=functools.partial(self._extras, spec.instance),
            max_concurrent_prompts=self.max_prompts,
        )
        service.on_prompt(lambda envelope, stream: self._on_prompt(spec, envelope, stream))
        await service.start()
        self._services.append(service)
        self.presented[spec.instance] = spec
        log.info("gateway.route_presented", route=spec.route, subject=service.subject.prompt)

    # ----------------------------------------------------------------- heartbeat extras

    def _extras(self, instance: str) -> dict[str, Any]:
        """What the next heartbeat of ``instance`` carries (read as each beat is built)."""
        return self._status[instance].model_dump()

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)  # a cadence (the SDK beats on its own timer)
            try:
                await self._refresh()
            except (AntsError, nats.errors.Error) as exc:  # the last figures stand until next time
                log.warning("gateway.status_failed", error=str(exc))

    async def _refresh(self) -> None:
        """Read what the heartbeats carry: live capable agents (one read of the cards for all
        routes) and each route's queue."""
        cards = await self.board.directory.cards()
        for instance, spec in list(self.presented.items()):
            self._status[instance] = await self._measure(spec, cards)

    async def _measure(self, spec: RouteSpec, cards: Sequence[AgentCard]) -> RouteStatus:
        """The figures of one route: who of ``cards`` can serve it, and its two lanes' tickets."""
        js = self.board.nc.jetstream()
        waiting = held = 0
        for consumer in _work_consumers(spec.route):
            try:
                info = await js.consumer_info(_WORK_STREAM, consumer)
            except nats.js.errors.NotFoundError:  # no task has taken that lane yet
                continue
            waiting += int(info.num_pending or 0)
            held += int(info.num_ack_pending or 0)
        return RouteStatus(
            route=spec.route,
            capabilities=list(spec.requires),
            kind=spec.kind,
            live_agents=sum(1 for card in cards if _serves(card, spec.requires)),
            queue_depth=waiting,
            in_flight=held,
        )

    # ----------------------------------------------------------------- prompts

    async def _on_prompt(self, spec: RouteSpec, envelope: Envelope, stream: PromptStream) -> None:
        """One prompt (acked by the SDK already): submit or find its task, then follow it."""
        try:
            task_id = await self._submit(spec, envelope, stream)
            result = await self._follow(task_id, stream)
        except AntsError as exc:
            code = exc.code if isinstance(exc, AgentProtocolError) and exc.code is not None else 500
            log.info("gateway.refused", route=spec.route, code=code, error=str(exc))
            raise self._host.RequestRejectedError(code, str(exc)) from exc
        await stream.send(self._sdk.ResponseChunk(text=response_text(result)))

    async def _submit(self, spec: RouteSpec, envelope: Envelope, stream: PromptStream) -> str:
        extras = envelope.extras
        key = extras.get(IDEMPOTENCY_FIELD)
        if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH):
            raise _refused(400, f"{IDEMPOTENCY_FIELD} must be a string of 1 to {MAX_KEY_LENGTH} characters")
        payload = self._sdk.encode(envelope)  # extension fields kept verbatim, as §5.6 asks
        fields: dict[str, JsonValue] = pydantic.TypeAdapter(dict[str, JsonValue]).validate_json(payload)
        fields.pop(IDEMPOTENCY_FIELD, None)  # it is the task's id already
        try:
            task = Task(
                id=task_id_for(key),
                kind=spec.kind,
                requires=spec.requires,
                payload=fields,
                created_by=self.name,
            )
        except pydantic.ValidationError as exc:
            raise _refused(400, f"the prompt makes no valid task: {exc.errors()[0]['msg']}") from exc
        # A new task with nobody to do it would only wait: say so now. (A task already on the board
        # is followed whoever is alive: it may be done.)
        if (key is None or not await self._exists(task.id)) and not await self.board.directory.who_can(
            spec.requires
        ):
            raise _refused(404, f"no live agent offers {' + '.join(spec.requires) or 'any capability'}")
        held = self._throttle.held_for(spec.requires)
        if held > 0 and (key is None or not await self._exists(task.id)):
            raise _refused(
                429, f"a provider rate-limited this work: the swarm holds it back (retry after {held:.3g}s)"
            )
        try:
            record = await self.board.submit(task)
        except TaskExists as exc:
            raise _refused(409, f"{IDEMPOTENCY_FIELD} {key!r} names another task: {exc}") from exc
        except InvalidTask as exc:
            raise _refused(400, str(exc)) from exc
        except RateLimited as exc:
            raise _refused(429, str(exc)) from exc
        log.info("gateway.prompt", route=spec.route, task_id=task.id, status=record.status.value)
        await stream.send(self._sdk.StatusChunk(status=f"task {task.id} {record.status.value}"))
        return task.id

    async def _exists(self, task_id: str) -> bool:
        try:
            await self.board.get(task_id)
        except TaskNotFound:
            return False
        return True

    async def _follow(self, task_id: str, stream: PromptStream) -> JsonValue:
        """Stream the task's progress reports until it ends; its result (or a 500 naming its error)."""
        relayed = _Relay(self._sdk, stream)
        reports = f"ants.trail.task.progress.{task_id}.*"

        async def forward() -> None:
            # From the beginning: a caller prompting again sees the reports it missed.
            try:
                async with aclosing(self.board.trail.watch(reports, since=_EPOCH)) as events:
                    async for event in events:
                        await relayed.send(event)
            except (AntsError, nats.errors.Error) as exc:  # the result still comes, and the rest after it
                log.warning("gateway.progress_lost", task_id=task_id, error=str(exc))

        forwarder = asyncio.create_task(forward(), name=f"gateway:progress:{task_id}")
        try:
            result = await self.board.result(task_id, timeout=self.max_wait)
        except TimeoutError as exc:
            raise _refused(
                504,
                f"task {task_id} has not finished within {self.max_wait:g}s; "
                f"prompt again with the same {IDEMPOTENCY_FIELD} to follow it",
            ) from exc
        except TaskFailed as exc:
            raise _refused(500, str(exc)) from exc
        except TaskNotFound as exc:
            raise _refused(404, str(exc)) from exc
        finally:
            await cancel_and_wait([forwarder])
        # Reports laid before the task ended but not delivered yet by the watch come first.
        for event in await self.board.trail.replay(reports):
            await relayed.send(event)
        return result


class _Relay:
    """Sends each progress report of a task to the caller once, in order."""

    def __init__(self, sdk: ModuleType, stream: PromptStream) -> None:
        self._sdk = sdk
        self._stream = stream
        self._last = 0

    async def send(self, event: TrailEvent) -> None:
        if event.seq is not None and event.seq <= self._last:
            return
        data = event.data if isinstance(event.data, dict) else {}
        fraction, note = data.get("fraction"), data.get("note")
        if isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0:
            text = progress_status(float(fraction), note if isinstance(note, str) else "")
            await self._stream.send(self._sdk.StatusChunk(status=text))
        self._last = event.seq or self._last


def _refused(code: int, message: str) -> AgentProtocolError:
    """The error a prompt is answered with instead of a result (its §9 status ``code``)."""
    return AgentProtocolError(message, code=code)


def _serves(card: AgentCard, requires: Sequence[str]) -> bool:
    return set(requires) <= {spec.name for spec in card.capabilities}


# ------------------------------------------------------------------- the process


async def _main(args: argparse.Namespace) -> None:
    secret = _common.seed(args)
    routes = [RouteSpec.parse(text, kind=args.kind) for text in args.route] or None
    async with (
        TaskBoard.connect(args.server, name=args.name, seed=secret) as board,
        AgentGateway(
            board,
            routes=routes,
            kind=args.kind,
            agent=args.agent,
            owner=args.owner,
            name=args.name,
            heartbeat_interval=args.heartbeat_interval,
            max_prompts=args.max_prompts,
            max_wait=args.max_wait,
        ) as gateway,
    ):
        print(
            f"ants-agent-gateway: {', '.join(sorted(gateway.presented)) or 'every route'} "
            f"as agents.prompt.{args.agent}.{args.owner}.<route>",
            flush=True,
        )
        await gateway.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-agent-gateway``."""
    p = _common.parser("ants-agent-gateway", __doc__ or "")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="[NAME:]CAP[,CAP...]",
        help="a route to present (repeatable; 'any' requires nothing); default: every route on the board",
    )
    p.add_argument("--kind", default=DEFAULT_KIND, help=f"kind of the tasks prompts become ({DEFAULT_KIND})")
    p.add_argument(
        "--agent", default=DEFAULT_AGENT, help=f"the agent token of the subjects ({DEFAULT_AGENT})"
    )
    p.add_argument(
        "--owner", default=DEFAULT_OWNER, help=f"the owner token of the subjects ({DEFAULT_OWNER})"
    )
    p.add_argument("--name", default="agent-gateway", help="who the tasks say created them (the user's id)")
    p.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between heartbeats (30)")
    p.add_argument("--max-prompts", type=int, default=256, help="prompts followed at once per route (256)")
    p.add_argument(
        "--max-wait", type=float, default=3600.0, help="seconds a prompt follows its task at most (3600)"
    )
    return _common.run(p.parse_args(argv), _main)


if __name__ == "__main__":
    sys.exit(main())
