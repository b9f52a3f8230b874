"""The routes a gateway presents: what each one is, who of the live agents can take its prompts
(kept current by watching the directory), and its queue."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass

import nats.js.errors
import pydantic
from nats.js import JetStreamContext
from pydantic import BaseModel

from ants_nats import AgentCard, AntsError, Directory, InvalidTask, Route, Task, matching

DEFAULT_KIND = "prompt"

# The route consumers' names on the work stream (docs/protocol.md): their counts are the
# route's queue.
_WORK_STREAM = "ANTS_WORK"


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
        except (pydantic.ValidationError, InvalidTask) as exc:
            reason = str(exc) if isinstance(exc, InvalidTask) else "; ".join(e["msg"] for e in exc.errors())
            raise AntsError(f"invalid route {self.requires!r} or kind {self.kind!r}: {reason}") from exc
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

    @functools.cached_property
    def task(self) -> Task:
        """What routing sees of the tasks its prompts become: their kind and capabilities."""
        return Task(id="prompt", kind=self.kind, requires=self.requires)


class RouteStatus(BaseModel):
    """What a presented route's heartbeats and ``status`` replies carry beyond §8.3 (the spec
    invites queue depth and capability hints there)."""

    route: str
    capabilities: list[str]
    kind: str
    live_agents: int = 0
    """Live agents that can take its prompts: every capability of the route, and its kind."""
    queue_depth: int = 0
    """Tickets waiting for an agent (both lanes)."""
    in_flight: int = 0
    """Tickets an agent holds (their tasks at work)."""
    note: str | None = None
    """Why no live agent can take its prompts, when none can (the board's words for it)."""


def unserved_because(spec: RouteSpec, cards: Iterable[AgentCard]) -> str | None:
    """None when one of ``cards`` can take the tasks of ``spec``; else why none can, in the words
    the board uses for an unroutable task (``no live agent handles kind 'prompt' with [llm]``)."""
    cards = list(cards)
    if any(card.can_take(spec.task) for card in cards):
        return None
    because = matching.unroutable_because(cards, spec.task)
    return "no live agent" if because is None else because[1]  # (None only when there is no card)


class Coverage:
    """Who of the live agents can take each route's prompts, from a watch of the directory: no
    read per prompt or heartbeat, and routes follow agents as they join and leave."""

    def __init__(self, directory: Directory, changed: Callable[[], None]) -> None:
        self._directory = directory
        self._changed = changed
        """Called when an agent joins or leaves, or changes what it takes."""
        self._cards: dict[str, AgentCard] = {}

    async def watch(self) -> None:
        """Keep the live cards current (returns only if the watch fails)."""
        # A watch (re)starting replays every live card: one that left meanwhile must not stay.
        self._cards.clear()
        async with aclosing(self._directory.watch()) as changes:
            async for change in changes:
                before = self._cards.pop(change.agent_id, None)
                if change.card is not None:
                    self._cards[change.agent_id] = change.card
                # Agents announce their load every few seconds: that changes no route.
                if _takes(before) != _takes(change.card):
                    self._changed()

    def able(self, spec: RouteSpec) -> int:
        """How many live agents can take the tasks of ``spec``."""
        return sum(1 for card in self._cards.values() if card.can_take(spec.task))

    def unserved(self, spec: RouteSpec) -> str | None:
        """Why no live agent can take the tasks of ``spec`` (None: one can)."""
        return unserved_because(spec, self._cards.values())

    async def unserved_now(self, spec: RouteSpec) -> str | None:
        """Like ``unserved``, but a "nobody" is read again from the directory: the watch may lag
        an agent that has just joined (or started before the gateway's watch caught up)."""
        if self.unserved(spec) is None:
            return None
        return unserved_because(spec, await self._directory.cards())


def _takes(card: AgentCard | None) -> tuple[frozenset[str], tuple[str, ...] | None] | None:
    """What decides which tasks the agent of ``card`` can take (None: no agent)."""
    return None if card is None else (card.capability_names, card.kinds)


async def queue_figures(js: JetStreamContext, route: str) -> tuple[int, int]:
    """The tickets of ``route`` waiting for an agent and those an agent holds (both lanes)."""
    waiting = held = 0
    for consumer in (f"work_{route}", f"work_{route}_express"):
        try:
            info = await js.consumer_info(_WORK_STREAM, consumer)
        except nats.js.errors.NotFoundError:  # no task has taken that lane yet
            continue
        waiting += int(info.num_pending or 0)
        held += int(info.num_ack_pending or 0)
    return waiting, held
