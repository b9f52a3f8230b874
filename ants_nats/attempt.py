"""One attempt at a task, from the claim an agent won to its ending: a ``RunningAttempt``.

The agent decides *whether* to work (capacity, trust, rate limits, its own rule); the attempt owns
*the work*: it runs the handler, keeps the claim while it runs (a deferred claim's write, then
heartbeats), and ends it one way: completed, failed, declined, given back, parked on a question,
held back by a rate limit, cancelled, or lost. Temporal's ``_RunningActivity`` and River's
``JobExecutor`` are the models: one object per run, with its own ``cancel``.

The ticket is the lease (see ``board/claim.py``): settling the record and then the ticket (ack when
finished, nak with a delay when the task comes back) is the attempt's last step.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
from nats.aio.msg import Msg
from pydantic import JsonValue

from ._aio import cancel_and_wait
from .board import Lease, TaskBoard
from .context import Handler, TaskContext
from .errors import (
    AntsError,
    ArtifactNotFound,
    CorruptEntry,
    InvalidTask,
    LeaseLost,
    ServerUnavailable,
)
from .log import get_logger
from .metrics import AgentMetrics, Ending
from .models import Task, TaskRecord, Usage
from .signals import AskingForInput, Decline, NonRetryable, RateLimited
from .throttle import Throttle
from .tracing import TaskTrace

log = get_logger("agent")

T = TypeVar("T")

RETRY_BACKOFF_S = 0.5
"""Pause between two tries of a write the server did not answer."""


class Declined:
    """The tasks an agent declined lately (the latest ``limit``), each with the agent's offer then:
    it steps aside for them while its offer is the same."""

    def __init__(self, limit: int = 10_000) -> None:
        self._offers: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._limit = limit

    def note(self, task_id: str, offer: str, retry_after: float | None = None) -> None:
        """``task_id`` was declined with ``offer`` (for ``retry_after`` seconds only, if given)."""
        until = math.inf if retry_after is None else time.monotonic() + retry_after
        self._offers[task_id] = (offer, until)
        self._offers.move_to_end(task_id)
        if len(self._offers) > self._limit:
            self._offers.popitem(last=False)

    def stands(self, task_id: str, offer: Callable[[], str]) -> bool:
        """Whether ``task_id`` was declined with the ``offer()`` made now, and has not lapsed
        (the offer is computed only for a task declined: most tickets never were)."""
        noted = self._offers.get(task_id)
        return noted is not None and time.monotonic() < noted[1] and noted[0] == offer()

    def forget(self, task_ids: Iterable[str] | None = None) -> list[str]:
        """Forget the declines of ``task_ids`` (None: all); returns the ids given (or all)."""
        forgotten = list(self._offers) if task_ids is None else list(task_ids)
        for task_id in forgotten:
            self._offers.pop(task_id, None)
        return forgotten


@dataclass(frozen=True)
class Crew:
    """What every attempt of one agent shares with it: the board, who it is, and its counters."""

    board: TaskBoard
    agent_id: str
    metrics: AgentMetrics
    throttle: Throttle
    handler_timeout: float | None
    offer: Callable[[], str]
    """The agent's offer now (``AgentCard.offer``): its declines stand while it holds."""
    declined: Declined
    done_with: Callable[[Msg], Awaitable[None]]
    """Acknowledge the ticket of a task run to its end: at once, or with the agent's next pull."""


def _first_leaf(group: BaseExceptionGroup[AskingForInput]) -> AskingForInput:
    """The first exception of ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return first if isinstance(first, AskingForInput) else _first_leaf(first)


class RunningAttempt:
    """One claim of one task in an agent's hands, and everything that happens to it until it ends."""

    def __init__(self, crew: Crew, msg: Msg, lease: Lease, trace: TaskTrace) -> None:
        self._crew = crew
        self._msg = msg  # the ticket: its un-acked delivery is the lease
        self.lease = lease
        self._trace = trace
        self.ctx = TaskContext(lease.task, lease, crew.board, answers=lease.answers)
        self._work: asyncio.Task[JsonValue] | None = None
        self.ending: Ending | None = None
        """How the attempt ended, once it has."""

    @property
    def task_id(self) -> str:
        """Id of the task this attempt is at."""
        return self.lease.task_id

    def cancel(self) -> None:
        """The task was cancelled (a ``task.cancelled`` event): stop the handler. ``run`` then
        checks the record: a real cancel acks the ticket, a lie gives the task back."""
        self.ctx.cancelled.set()  # first, so cooperative code sees why it is being cancelled
        if self._work is not None:
            self._work.cancel()

    def _ended(self, ending: Ending, error: str | None = None) -> None:
        """Count how the attempt ended, and say so on its trace."""
        self.ending = ending
        self._crew.metrics.count(ending, self.lease.task)
        self._trace.outcome(ending, error)

    # ----------------------------------------------------------------- endings without a run

    async def decline(
        self, reason: str, spent: Usage | None = None, *, retry_after: float | None = None
    ) -> None:
        """Turn the task down (free, and not an attempt): noted on the record with the reason.
        The ticket goes back at once to an agent already waiting (ours comes later), unless no
        live agent able to take the task is left that has not declined it: then it is unroutable,
        and the ticket is done with (or held back until the first "not now" lapses)."""
        lease = self.lease
        log.info("task.declined", agent=lease.agent_id, task_id=lease.task_id, reason=reason)
        self._ended("declined", reason)
        offer = self._crew.offer()
        # Noted first: should the ticket come back to us, we step aside while the decline stands.
        self._crew.declined.note(lease.task_id, offer, retry_after)
        board = self._crew.board
        record = await self._settled(
            "decline",
            lambda: board.decline(lease, reason, offer=offer, retry_after=retry_after, usage=spent),
        )
        if record is None:
            return
        delay = await board.held_back(record)
        await self._answer_ticket(None if delay is None else delay or 0.0)

    async def give_back(self) -> None:
        """Let go of the task (shutdown, or a cancel that did not hold): others take it now."""
        self._ended("released")
        if await self._settled("release", lambda: self._crew.board.release(self.lease)) is not None:
            await self._answer_ticket(0.0)

    async def _settled(self, ending: str, settle: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``settle``, the write that ends the attempt (idempotent, and fenced by its token),
        retrying while the server cannot answer and the lease may live. None when it gave up: the
        lease then runs out on the server and another agent redoes the task (a fault the swarm
        recovers from, logged as a warning, never as a crash)."""
        lease = self.lease
        loop = asyncio.get_running_loop()
        give_up = loop.time() + lease.ttl
        tries = 0
        while True:
            try:
                return await settle()
            except ServerUnavailable as exc:
                tries += 1
                fields = {
                    "agent": lease.agent_id,
                    "task_id": lease.task_id,
                    "ending": ending,
                    "error": str(exc),
                }
                if loop.time() + RETRY_BACKOFF_S > give_up:
                    log.warning(
                        "task.settle_gave_up", tries=tries, then="its lease runs out; it is redone", **fields
                    )
                    return None
                if tries == 1:
                    log.warning("task.settle_retrying", **fields)
                await asyncio.sleep(RETRY_BACKOFF_S)

    async def _answer_ticket(self, delay: float | None, *, with_next_pull: bool = False) -> None:
        """Ack the ticket (``delay`` None: the task is done with) or hand it back after ``delay``
        seconds (0: now); ``with_next_pull``: the ack may ride on the agent's next pull (the end
        of a run, the hot path). A failure leaves the ticket to be redelivered when its ack wait
        ends, and whoever gets it reads the record: a warning, not a crash."""
        try:
            if delay is None and with_next_pull:
                await self._crew.done_with(self._msg)
            elif delay is None:
                await self._msg.ack()
            else:
                await self._msg.nak(delay=delay or None)
        except nats.errors.Error as exc:
            log.warning(
                "ticket.answer_failed", agent=self.lease.agent_id, task_id=self.task_id, error=str(exc)
            )

    async def give_back_quietly(self) -> None:
        """``give_back`` while shutting down: a failure only leaves the lease to expire."""
        try:
            await self.give_back()
        except (AntsError, nats.errors.Error) as exc:
            log.warning(
                "task.give_back_failed", agent=self.lease.agent_id, task_id=self.task_id, error=str(exc)
            )

    # ----------------------------------------------------------------- the run

    async def run(self, handler: Handler) -> None:
        """Run ``handler`` under the claim and end the attempt by how it ended."""
        lease, ctx, crew = self.lease, self.ctx, self._crew
        work = self._work = asyncio.create_task(
            self._call(handler, lease.task), name=f"{lease.agent_id}:{lease.task_id}"
        )
        keeping: asyncio.Task[None] | None = None
        later: asyncio.TimerHandle | None = None

        def keep() -> None:
            nonlocal keeping
            if not work.done():
                keeping = asyncio.create_task(self._keep_claim(), name=f"{lease.agent_id}:keep")

        try:
            if lease.claimed:
                keep()
            else:
                # A handler done within ``claim_after`` costs no claim write and no keeping task
                # (a timer, not a wait: the handler's end wakes this task directly).
                later = asyncio.get_running_loop().call_later(crew.board.config.claim_after, keep)
            result = await work
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():
                await self._cancelled_while_running()
                return
            if ctx.lease_lost.is_set():
                log.warning(
                    "task.abandoned", agent=lease.agent_id, task_id=lease.task_id, reason="lease lost"
                )
                self._ended("expired", "lease lost")
                return
            raise
        except AskingForInput as asking:
            await self._park(asking)
            return
        except RateLimited as exc:
            await self._rate_limited(exc)
            return
        except Decline as exc:
            await self.decline(str(exc) or "declined by handler", ctx.spent, retry_after=exc.retry_after)
            return
        except NonRetryable as exc:
            await self._finish(error=f"NonRetryable: {exc}", retry=False)
            return
        except Exception as exc:  # a handler's failure is the task's failure, not ours
            await self._finish(error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            if later is not None:
                later.cancel()
            await cancel_and_wait([work] if keeping is None else [keeping, work])
            current = asyncio.current_task()
            if ctx.spent.tokens and not (current is not None and current.cancelling()):
                await self._charge()  # not while shutting down: give the task back first
        await self._finish(result=result)

    async def _call(self, handler: Handler, task: Task) -> JsonValue:
        """Run ``handler`` (in its own asyncio task, so the handler span is current in it) and
        count its run: its duration, and whether it failed."""
        start = time.perf_counter_ns()
        error: str | None = None
        try:
            with self._trace.handling(not_errors=(Decline,)):
                return await self._invoke(handler, task)
        except Decline:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._crew.metrics.handled(task.kind, time.perf_counter_ns() - start, error)

    async def _invoke(self, handler: Handler, task: Task) -> JsonValue:
        ctx = self.ctx
        if task.payload_ref is not None:  # the handler sees the payload, wherever it is kept
            try:
                payload = await self._crew.board.payload_of(task)
            except (ArtifactNotFound, CorruptEntry) as exc:
                raise NonRetryable(f"cannot read the payload: {exc}") from exc
            task = ctx.task = task.model_copy(update={"payload": payload, "payload_ref": None})
        limit = task.timeout if task.timeout is not None else self._crew.handler_timeout
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

    # ----------------------------------------------------------------- keeping the claim

    def _lost(self) -> None:
        """The claim is gone: the handler's result would be rejected, so stop it."""
        self.ctx.lease_lost.set()
        if self._work is not None:
            self._work.cancel()

    async def _keep_claim(self) -> None:
        """Keep the claim while the handler runs: write a deferred claim (the handler has run for
        ``claim_after`` by now), then heartbeat."""
        lease, crew = self.lease, self._crew
        if not lease.claimed:
            try:
                await crew.board.confirm(lease)
            except LeaseLost:
                self._lost()
                return
            except (ServerUnavailable, nats.errors.Error) as exc:  # the first heartbeat tries again
                log.warning(
                    "task.claim_write_failed", agent=lease.agent_id, task_id=lease.task_id, error=str(exc)
                )
                crew.metrics.heartbeat_failed()
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        """Extend the lease every third of its TTL until the handler ends or the claim is lost."""
        lease, crew = self.lease, self._crew
        while True:
            await asyncio.sleep(lease.ttl / 3)
            try:
                await crew.board.heartbeat(lease)  # also extends the ticket's ack wait
            except LeaseLost:
                self._lost()
                return
            except (ServerUnavailable, nats.errors.Error) as exc:
                log.warning(
                    "lease.heartbeat_failed", agent=lease.agent_id, task_id=lease.task_id, error=str(exc)
                )
                crew.metrics.heartbeat_failed()
                if crew.board.nc.is_closed:  # no reconnect will come: the lease is as good as gone
                    self._lost()
                    return

    # ----------------------------------------------------------------- endings after a run

    async def _finish(
        self, *, result: JsonValue = None, error: str | None = None, retry: bool = True
    ) -> None:
        """Record the outcome, retrying while the server is unreachable and the lease may live; a
        failure to be retried comes back after the task's backoff (the server holds the ticket)."""
        lease, board, spent = self.lease, self._crew.board, self.ctx.spent
        ending = "complete" if error is None else "fail"

        def settle() -> Awaitable[TaskRecord]:
            if error is None:
                return board.complete(lease, result, usage=spent)
            return board.fail(lease, error, retry=retry, usage=spent)

        with self._trace.finishing(ending):
            try:
                record = await self._settled(ending, settle)
            except LeaseLost:
                log.warning(
                    "task.late_result_rejected",
                    agent=lease.agent_id,
                    task_id=lease.task_id,
                    token=lease.token,
                )
                self._ended("expired", "late result rejected")
                return
        if record is None:
            self._ended("expired", "the server did not answer before the lease ran out")
            return
        self._ended("completed" if error is None else "failed", error)
        if record.status.terminal:
            await self._answer_ticket(None, with_next_pull=True)
        else:
            failures = sum(1 for a in record.attempts if a.outcome == "failed")
            await self._answer_ticket(record.task.retry.delay(failures))

    async def _cancelled_while_running(self) -> None:
        """The handler was stopped by a cancel event: ack the ticket if the record says so (the
        task is finished), else the event lied (anyone can publish one) and the task goes back."""
        lease = self.lease
        record = await self._crew.board.get(lease.task_id)
        if record.status.terminal:
            log.info("task.cancel_obeyed", agent=lease.agent_id, task_id=lease.task_id)
            self._ended("cancelled")
            await self._answer_ticket(None)
            return
        log.warning(
            "task.cancel_unconfirmed", agent=lease.agent_id, task_id=lease.task_id, status=record.status.value
        )
        await self.give_back()

    async def _charge(self) -> None:
        """Count the tokens the handler reported against the token limits of its capabilities."""
        lease = self.lease
        try:
            await self._crew.throttle.charge(lease.task.requires, self.ctx.spent.tokens)
        except (AntsError, nats.errors.Error) as exc:  # the window errs towards letting work through
            log.warning("limit.charge_failed", agent=lease.agent_id, task_id=lease.task_id, error=str(exc))

    async def _rate_limited(self, exc: RateLimited) -> None:
        """A provider's limit was met: hold the task's capabilities back, swarm-wide, and give
        the task back for then (not an attempt)."""
        lease = self.lease
        try:
            released = await self._settled(
                "release", lambda: self._crew.board.release(lease, reason=str(exc), usage=self.ctx.spent)
            )
        except LeaseLost:  # expired or cancelled meanwhile: nothing of ours to give back
            released = None
        if released is None:
            self._ended("expired", "lease lost")
            return
        self._ended("rate_limited", str(exc))
        await self._answer_ticket(exc.retry_after)
        try:  # after the task is back: holding the others back is worth less than that
            await self._crew.throttle.hold(lease.task.requires, exc.retry_after, str(exc))
        except (AntsError, nats.errors.Error) as error:
            log.warning("limit.hold_failed", agent=lease.agent_id, task_id=lease.task_id, error=str(error))

    async def _park(self, asking: AskingForInput) -> None:
        """The handler asked a question: park the task, and hand the ticket back to the server
        with the question's timeout as the delay (it comes back then, to fail the task if nobody
        answered; an answer announces a ticket of its own)."""
        lease = self.lease
        board = self._crew.board
        try:
            parked = await self._settled(
                "ask", lambda: board.ask(lease, asking.question, timeout=asking.timeout, usage=self.ctx.spent)
            )
        except LeaseLost:  # expired or cancelled meanwhile: nothing of ours to park
            parked = None
        except InvalidTask as exc:  # a question the board refuses: the handler's own failure
            await self._finish(error=f"{type(exc).__name__}: {exc}")
            return
        if parked is None:
            self._ended("expired", "lease lost")
            return
        log.info("task.asked", agent=lease.agent_id, task_id=lease.task_id, timeout=asking.timeout)
        self._ended("asked", asking.question)
        await self._answer_ticket(asking.timeout)
