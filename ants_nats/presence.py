"""An agent's presence: its card (announced periodically and on change, withdrawn on exit), its
joined/changed/left marks on the trail, and its answers to NATS services discovery (``nats.micro``:
PING/INFO/STATS, plus a ``card`` endpoint on ``ants.agent.<id>.card``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import pydantic
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from pydantic import JsonValue

from ._aio import cancel_and_wait
from ._version import __version__
from .board import TaskBoard
from .errors import InvalidTask, ServerUnavailable
from .identity import Identity
from .log import get_logger
from .models import AgentCard, CapabilitySpec, TrailEvent
from .names import MICRO_SERVICE_NAME

log = get_logger("presence")

_LEAVE_TIMEOUT_S = 2.0
"""Longest a stopping agent waits to withdraw its card."""
_MIN_ANNOUNCE_GAP_S = 1.0
"""Load changes are coalesced: at most one announcement per this many seconds."""


class Presence:
    """Keeps one agent visible while it runs. Owned by ``Agent``; ``card()`` reads its live state."""

    def __init__(self, board: TaskBoard, card: Callable[[], AgentCard], identity: Identity) -> None:
        self._board = board
        self._card = card
        self._identity = identity
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._service: Service | None = None

    async def start(self) -> None:
        """Announce the card, mark the trail, register with NATS services discovery, start the loop."""
        card = self._card()
        await self._board.directory.announce(card)
        await self._mark("agent.joined", card)
        self._service = await add_service(
            self._board.nc,
            name=MICRO_SERVICE_NAME,
            version=__version__,
            description=f"ants-nats agent {card.name}",
            metadata={"agent_id": card.id, "capabilities": ",".join(sorted(card.capability_names))},
        )
        await self._service.add_endpoint(
            name="card", subject=f"ants.agent.{card.id}.card", handler=self._answer
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
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._board.directory.announce(self._card())
            except ServerUnavailable as exc:  # reconnecting: the next round re-announces
                log.warning("card.announce_failed", error=str(exc))
            await asyncio.sleep(_MIN_ANNOUNCE_GAP_S)

    async def _answer(self, request: Request) -> None:
        await request.respond(self._card().model_dump_json().encode())

    async def _mark(self, kind: str, card: AgentCard) -> None:
        capabilities: list[JsonValue] = [*sorted(card.capability_names)]
        data: JsonValue = {"name": card.name, "capabilities": capabilities, "capacity": card.capacity}
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
