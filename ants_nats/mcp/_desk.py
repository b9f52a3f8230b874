"""The hosted agent: an ``Agent`` whose handler hands each task to the model and awaits its verdict.

The agent runtime does what an agent must (pull tickets it can serve, claim, heartbeat the lease
while the model thinks, release what is left on exit); the desk only passes tasks across: the
handler puts an ``Offer`` on a queue, ``next`` gives it to the model, and ``settle`` resolves the
handler's future with the model's verdict.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from pydantic import JsonValue

from ants_nats import (
    CATCH_ALL,
    Agent,
    AntsError,
    Decline,
    NonRetryable,
    PayloadTooLarge,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
)
from ants_nats.log import get_logger

log = get_logger("mcp")

_GONE_REMEMBERED = 256
"""How many tasks that left the desk unsettled are remembered, to say why to a late verdict."""


class NotHeld(AntsError):
    """The model named a task this server's agent does not hold for it."""


class ModelFailure(Exception):
    """The model reported that its attempt at a task failed; the task may be tried again."""


@dataclass(frozen=True)
class Complete:
    """The model's verdict: done, with this result."""

    result: JsonValue


@dataclass(frozen=True)
class Fail:
    """The model's verdict: the attempt failed (``retry``: another attempt may succeed)."""

    error: str
    retry: bool


@dataclass(frozen=True)
class Refuse:
    """The model's verdict: it will not take the task; another agent should."""

    reason: str


Answer = Complete | Fail | Refuse


@dataclass
class Offer:
    """A claimed task on its way to the model, and the future its handler awaits."""

    task: Task
    ctx: TaskContext
    verdict: asyncio.Future[Answer]
    picked: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    """The handler no longer waits (not picked in time, lease lost, cancelled, shut down)."""


class Desk:
    """Hosts one ``Agent`` (``capabilities``, ``capacity``) and passes its tasks to the model.

    ``kinds`` are the task kinds it takes; None takes every kind (a catch-all handler). A task the
    model does not pick up within ``pickup_timeout`` seconds is declined, so a model that stopped
    asking for work does not sit on tasks other agents could do; when the model asks again, those
    declines are taken back (``Agent.forget_declines``). One it holds longer than ``hold_timeout`` seconds
    (unless the task sets its own ``timeout``) fails that attempt, so a client that vanished over
    HTTP does not keep it forever.
    """

    def __init__(
        self,
        board: TaskBoard,
        *,
        name: str,
        capabilities: Sequence[str],
        capacity: int = 1,
        kinds: Sequence[str] | None = None,
        pickup_timeout: float = 60.0,
        hold_timeout: float | None = 3600.0,
    ) -> None:
        self.board = board
        # The agent's own shutdown grace is short: no model can answer once the server stops,
        # so waiting longer would only delay the release of what it held.
        self.agent = Agent(
            board,
            name=name,
            capabilities=capabilities,
            capacity=capacity,
            handler_timeout=hold_timeout,
            shutdown_grace=1.0,
        )
        self.pickup_timeout = pickup_timeout
        self.hold_timeout = hold_timeout
        self._kinds: set[str] = set()
        for kind in kinds if kinds is not None else (CATCH_ALL,):
            self.serve_kind(kind)
        self._unpicked: set[str] = set()
        """Tasks declined because the model did not pick them up (taken back when it asks again)."""
        self._offers: asyncio.Queue[Offer] = asyncio.Queue()
        self._held: dict[str, Offer] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.agent)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The agent's exit releases every task the model left unsettled.
        await self._stack.aclose()

    def serve_kind(self, kind: str) -> None:
        """Hand tasks of ``kind`` to the model from now on."""
        if kind not in self._kinds:
            self._kinds.add(kind)
            self.agent.handler(kind)(self._handle)

    # ----------------------------------------------------------------- the agent's side

    async def _handle(self, task: Task, ctx: TaskContext) -> JsonValue:
        offer = Offer(task, ctx, asyncio.get_running_loop().create_future())
        self._held[task.id] = offer
        self._offers.put_nowait(offer)
        try:
            if not await self._picked(offer):
                self._unpicked.add(task.id)
                # A "not now": should the model be back before the desk hears of it (next()
                # takes declines back), the task still comes back when it lapses.
                raise Decline(
                    f"not picked up by the model within {self.pickup_timeout:g}s",
                    retry_after=self.pickup_timeout,
                )
            answer = await offer.verdict
        finally:
            offer.gone = True
            if self._held.get(task.id) is offer:
                del self._held[task.id]
            if not offer.verdict.done():
                self._remember_gone(task.id, ctx)
        match answer:
            case Complete(result):
                return result
            case Fail(error, retry=False):
                raise NonRetryable(error)
            case Fail(error):
                raise ModelFailure(error)
            case Refuse(reason):
                raise Decline(reason)

    async def _picked(self, offer: Offer) -> bool:
        try:
            async with asyncio.timeout(self.pickup_timeout):
                await offer.picked.wait()
        except TimeoutError:
            # Picked in the very step the timeout fired: the model has it, so it stays.
            return offer.picked.is_set()
        return True

    def _remember_gone(self, task_id: str, ctx: TaskContext) -> None:
        if ctx.cancelled.is_set():
            why = "it was cancelled"
        elif ctx.lease_lost.is_set():
            why = "its lease was lost (another agent may have it now)"
        else:
            why = "the attempt ended (the task's timeout, or this server stopping)"
        self._gone[task_id] = why
        while len(self._gone) > _GONE_REMEMBERED:
            self._gone.popitem(last=False)

    # ----------------------------------------------------------------- the model's side

    async def next(self, timeout: float) -> Offer | None:
        """The next task for the model, waiting up to ``timeout`` seconds; None if none came."""
        if self._unpicked:  # the model is back: what it missed meanwhile may come to it again
            missed, self._unpicked = self._unpicked, set()
            await self.agent.forget_declines(missed)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    offer = await self._offers.get()
                    if not offer.gone:
                        offer.picked.set()
                        self._gone.pop(offer.task.id, None)
                        return offer
        except TimeoutError:
            return None

    def unpick(self, offer: Offer) -> None:
        """Put back an offer the model never saw (the call that picked it was cancelled)."""
        if not offer.gone and not offer.verdict.done():
            offer.picked.clear()
            self._offers.put_nowait(offer)

    def time_left(self, offer: Offer) -> float | None:
        """Seconds left to settle ``offer`` before its attempt fails (the task's own timeout, else
        ``hold_timeout``, counted from the claim); None: no limit."""
        limit = offer.task.timeout if offer.task.timeout is not None else self.hold_timeout
        if limit is None:
            return None
        return max(0.0, limit - (datetime.now(UTC) - offer.ctx.lease.started_at).total_seconds())

    def holding(self, task_id: str) -> Offer:
        """The offer of ``task_id`` the model picked and has not settled; ``NotHeld`` otherwise."""
        offer = self._held.get(task_id)
        if offer is None or not offer.picked.is_set() or offer.gone:
            why = self._gone.get(task_id)
            if why is not None:
                raise NotHeld(f"task {task_id!r} is no longer yours: {why}")
            raise NotHeld(f"you hold no task {task_id!r}: claim one with claim_next first")
        if offer.verdict.done():
            raise NotHeld(f"task {task_id!r} is settled already")
        return offer

    async def settle(self, task_id: str, answer: Answer) -> tuple[TaskRecord, str | None]:
        """Give the model's verdict on ``task_id`` to its handler, then wait (up to a lease TTL)
        until the board records it: the record, and how the attempt ended (None if not yet)."""
        offer = self.holding(task_id)
        if isinstance(answer, Complete):
            # Checked here, while the model can still be told: the board would refuse it later.
            size = len(json.dumps(answer.result, separators=(",", ":")).encode())
            limit = self.board.config.max_payload_bytes
            if size > limit:
                raise PayloadTooLarge("the result", size, limit)
        lease = offer.ctx.lease
        offer.verdict.set_result(answer)
        # The runtime writes the outcome once the handler returns: watch for this claim's attempt
        # (its start identifies it; the token may have changed when a deferred claim was written).
        record: TaskRecord | None = None
        try:
            async with asyncio.timeout(lease.ttl), aclosing(self.board.watch([task_id])) as records:
                async for record in records:
                    for attempt in reversed(record.attempts):
                        if attempt.agent == self.agent.id and attempt.started_at == lease.started_at:
                            return record, attempt.outcome
                    # A decline is no attempt: it is noted with the token of the claim it ended.
                    if any(d.agent == self.agent.id and d.token == lease.token for d in record.declines):
                        return record, "declined"
        except TimeoutError:
            pass
        return record or await self.board.get(task_id), None

    async def progress(self, task_id: str, fraction: float, note: str) -> None:
        """Report progress on a task the model works on (``task.progress`` on the trail)."""
        await self.holding(task_id).ctx.progress(fraction, note)
