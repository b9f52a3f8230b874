"""An agent's presence: its card (announced periodically and on change, withdrawn on exit), its
joined/changed/left marks on the trail, and its answers to NATS services discovery (``nats.micro``:
PING/INFO/STATS, a ``card`` endpoint on ``ants.agent.<id>.card`` and a ``work`` endpoint on
``ants.agent.<id>.work``).

``nats micro stats ants-agent`` shows, for the ``work`` endpoint, the agent's real work: tasks
served (handler runs that ended), errors (failed runs) and processing time, counted locally by
``AgentMetrics`` (no message per task). Every endpoint carries a metadata map, never null (ADR-32).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

import pydantic
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig
from pydantic import JsonValue

from ._aio import cancel_and_wait
from ._version import __version__
from .board import TaskBoard
from .errors import InvalidTask, ServerUnavailable
from .identity import Identity
from .log import get_logger
from .metrics import WorkStats
from .models import AgentCard, CapabilitySpec, TrailEvent
from .names import MICRO_SERVICE_NAME

log = get_logger("presence")

_LEAVE_TIMEOUT_S = 2.0
"""Longest a stopping agent waits to withdraw its card."""
_MIN_ANNOUNCE_GAP_S = 1.0
"""Load changes are coalesced: at most one announcement per this many seconds."""

WORK_ENDPOINT = "work"
"""The endpoint whose ``nats micro stats`` are the agent's task work (not requests to it)."""

_ENDPOINT_METADATA = {
    "card": {"description": "this agent's card (AgentCard, JSON)", "format": "application/json"},
    WORK_ENDPOINT: {
        "description": "tasks this agent served: its statistics are its task work (JSON)",
        "format": "application/json",
    },
}


class _AgentService(Service):
    """A ``nats.micro`` service whose ``work`` endpoint reports the agent's task work.

    The library counts the requests each endpoint answers; for ``work`` that would be the few
    people asking, so its statistics are replaced by the handler runs ``WorkStats`` counted."""

    def __init__(self, nc: Any, config: Any, work: WorkStats) -> None:
        super().__init__(nc, config)
        self._work = work

    def stats(self) -> Any:
        stats = super().stats()
        work = self._work
        stats.endpoints = [
            dataclasses.replace(
                endpoint,
                num_requests=work.served,
                num_errors=work.errors,
                last_error=work.last_error or None,
                processing_time=work.processing_ns,
                average_processing_time=work.average_ns,
            )
            if endpoint.name == WORK_ENDPOINT
            else endpoint
            for endpoint in stats.endpoints
        ]
        return stats


class Presence:
    """Keeps one agent visible while it runs. Owned by ``Agent``; ``card()`` reads its live state."""

    def __init__(
        self,
        board: TaskBoard,
        card: Callable[[], AgentCard],
        identity: Identity,
        work: WorkStats | None = None,
        on_rejoin: Callable[[], None] | None = None,
    ) -> None:
        """``on_rejoin`` is called when the card is announced again after it may have lapsed (no
        announcement for longer than its TTL: a partition, a paused process): others may have
        given up on the agent meanwhile."""
        self._board = board
        self._card = card
        self._identity = identity
        self._work = work or WorkStats()
        self._on_rejoin = on_rejoin
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._service: Service | None = None

    async def start(self) -> None:
        """Announce the card, mark the trail, register with NATS services discovery, start the loop."""
        card = self._card()
        await self._board.directory.announce(card)
        await self._mark("agent.joined", card)
        config = ServiceConfig(
            name=MICRO_SERVICE_NAME,
            version=__version__,
            description=f"ants-nats agent {card.name}",
            metadata={"agent_id": card.id, "capabilities": ",".join(sorted(card.capability_names))},
        )
        self._service = _AgentService(self._board.nc, config, self._work)
        await self._service.start()
        await self._service.add_endpoint(
            name="card",
            subject=f"ants.agent.{card.id}.card",
            handler=self._answer,
            metadata=_ENDPOINT_METADATA["card"],
        )
        await self._service.add_endpoint(
            name=WORK_ENDPOINT,
            subject=f"ants.agent.{card.id}.{WORK_ENDPOINT}",
            handler=self._answer_work,
            metadata=_ENDPOINT_METADATA[WORK_ENDPOINT],
        )
        self._loop_task = asyncio.create_task(self._announce_loop(), name=f"{card.id}:presence")

    def changed(self) -> None:
        """Something on the card changed (load, capabilities): announce it soon."""
        self._dirty.set()

    async def capabilities_changed(self) -> None:
        """Announce new capabilities at once and leave an ``agent.changed`` mark."""
        card = self._card()
        await self._board.directory.announce(card)
        await self._mark("agent.changed", card)

    async def stop(self) -> None:
        """Stop announcing, withdraw the card and leave an ``agent.left`` mark."""
        if self._loop_task is not None:
            await cancel_and_wait([self._loop_task])
        if self._service is not None:
            with contextlib.suppress(Exception):  # the connection may be gone: nothing left to stop
                await self._service.stop()
        card = self._card()
        # Leaving without a server is still leaving: the card expires on its own TTL, so a stop
        # waits for the server only briefly.
        with contextlib.suppress(ServerUnavailable, TimeoutError):
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                await self._board.directory.withdraw(card.id)
                await self._mark("agent.left", card)

    async def _announce_loop(self) -> None:
        interval = self._board.directory.card_ttl / 3
        # The gap counts within the interval: a card is announced at least every ``interval``,
        # however short its TTL (a gap on top of it let a 1 s card lapse between announcements).
        gap = min(_MIN_ANNOUNCE_GAP_S, interval / 2)
        loop = asyncio.get_running_loop()
        announced = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval - gap):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._board.directory.announce(self._card())
            except ServerUnavailable as exc:  # reconnecting: the next round re-announces
                log.warning("card.announce_failed", error=str(exc))
            else:
                silent, announced = loop.time() - announced, loop.time()
                if silent > self._board.directory.card_ttl and self._on_rejoin is not None:
                    log.info("card.rejoined", agent=self._card().id, silent=round(silent, 1))
                    self._on_rejoin()
            await asyncio.sleep(gap)

    async def _answer(self, request: Request) -> None:
        await request.respond(self._card().model_dump_json().encode())

    async def _answer_work(self, request: Request) -> None:
        await request.respond(json.dumps(self._work.as_json()).encode())

    async def _mark(self, kind: str, card: AgentCard) -> None:
        capabilities: list[JsonValue] = [*sorted(card.capability_names)]
        kinds: JsonValue = None if card.kinds is None else [*card.kinds]
        data: JsonValue = {
            "name": card.name,
            "capabilities": capabilities,
            "kinds": kinds,
            "capacity": card.capacity,
        }
        event = TrailEvent(kind=kind, ref=card.id, agent=card.id, by=card.id, data=data)
        await self._board.trail.emit(event, signer=self._identity)


def as_specs(capabilities: Iterable[str | CapabilitySpec]) -> tuple[CapabilitySpec, ...]:
    """Normalise capability names and specs to specs, one per name (the last one wins)."""
    if isinstance(capabilities, str):
        raise InvalidTask(f"capabilities must be a list of names, not the string {capabilities!r}")
    specs: dict[str, CapabilitySpec] = {}
    for item in capabilities:
        try:
            spec = item if isinstance(item, CapabilitySpec) else CapabilitySpec(name=item)
        except pydantic.ValidationError as exc:
            raise InvalidTask(f"invalid capability {item!r}: use lower case a-z 0-9 _ -") from exc
        specs[spec.name] = spec
    return tuple(sorted(specs.values(), key=lambda s: s.name))
