"""Tickets: how agents learn that a task is ready, without a thundering herd.

When a task becomes ready, one ticket is published on ``ants.work.<route>`` in the work-queue stream
``ANTS_WORK`` (``Nats-Msg-Id`` = task id, so racing announcers publish it once). Each route has one
durable pull consumer shared by every agent able to serve it, so a ticket reaches **one** agent, which
then claims through the KV lease (the authoritative lock). An agent pulls only with spare capacity.

A task with ``priority > 0`` has its ticket published on the route's *express lane*
(``ants.work.<route>.express``, consumer ``work_<route>_express``), which agents drain before the
normal lane whenever they have room; within a lane, tickets are first-in first-out.

The holder keeps its ticket un-acked while it works (``in_progress`` on each heartbeat; the
consumer's ack wait equals the lease TTL). If the holder dies, the server redelivers the ticket about
when the lease expires, and the next agent's claim takes over: no reaper, no polling. A ticket is
acked only when its task has reached a terminal state.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from ._aio import gather_bounded
from ._store import (
    Bucket,
    Conflict,
    ensure_consumer,
    ensure_kv,
    ensure_stream,
    publish,
    publish_batches,
    translate_errors,
)
from ._watch import watch_values
from .log import get_logger
from .models import Route, TaskRecord, Ticket, parse_or_none, wire_bytes
from .names import ROUTES_BUCKET, WORK_STREAM, WORK_SUBJECT_PREFIX, route_of, work_consumer, work_subject

log = get_logger("tickets")

_DUPLICATE_WINDOW_S = 120.0


class Routes:
    """The registry of routes (``ants_routes``) and the ticket stream with its route consumers."""

    def __init__(self, js: JetStreamContext, *, replicas: int, lease_ttl: float) -> None:
        self._js = js
        self._replicas = replicas
        self._ack_wait = lease_ttl
        self._bucket = Bucket(js, ROUTES_BUCKET)
        self._known: set[tuple[str, bool]] = set()

    async def ensure(self) -> None:
        """Create the routes bucket and the work stream unless they exist."""
        await ensure_kv(self._js, ROUTES_BUCKET, replicas=self._replicas, history=1)
        await ensure_stream(
            self._js,
            StreamConfig(
                name=WORK_STREAM,
                subjects=[f"{WORK_SUBJECT_PREFIX}.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=_DUPLICATE_WINDOW_S,
                allow_atomic=True,
                allow_direct=True,  # ``nats stream view ANTS_WORK`` reads with direct gets
            ),
        )

    async def register(self, requires: Iterable[str], *, express: bool = False) -> str:
        """Make sure the route of ``requires`` exists with its consumer (and its express lane, with
        ``express``); returns the route name."""
        route = route_of(requires)
        if (route, express) in self._known:
            return route
        await self.ensure_consumer(route)
        if express:
            await self.ensure_consumer(route, express=True)
        wanted = Route(requires=tuple(sorted(set(requires))), express=express).model_dump_json().encode()
        while True:
            entry = await self._bucket.get(route)
            known = None if entry is None else _parse_route(route, entry.value)
            if known is not None and (known.express or not express):
                break  # registered as needed already
            try:
                if entry is None:
                    await self._bucket.create(route, wanted)
                else:  # opening the express lane (or replacing garbage)
                    await self._bucket.update(route, wanted, last=entry.revision)
            except Conflict:
                continue  # someone registered it meanwhile: look again
            log.info("route.registered", route=route, express=express)
            break
        self._known.add((route, express))
        return route

    async def ensure_consumer(self, route: str, *, express: bool = False) -> None:
        """Create the durable consumer of ``route`` (or of its express lane) unless it exists."""
        await ensure_consumer(
            self._js,
            WORK_STREAM,
            ConsumerConfig(
                durable_name=work_consumer(route, express=express),
                filter_subject=work_subject(route, express=express),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_deliver=-1,
                max_ack_pending=-1,
            ),
        )

    async def announce(self, record: TaskRecord, revision: int, *, again: bool = False) -> None:
        """Publish the ticket of a ready task (once: duplicates within 2 minutes are dropped).

        The ticket carries the ready record and its revision, so the agent it reaches can claim
        with a single compare-and-set. ``again``: the task was put back after it ended; its
        message id names the revision, so the first ticket's id does not drop this one."""
        subject, payload, headers = _ticket(record, revision)
        if again:
            headers["Nats-Msg-Id"] = f"ticket-{record.task.id}-{revision}"
        async with translate_errors(f"announce {record.task.id}"):
            await publish(self._js, subject, payload, headers=headers)
        log.debug("task.announced", task_id=record.task.id, route=record.task.route)

    async def announce_many(self, ready: Sequence[tuple[TaskRecord, int]]) -> None:
        """``announce`` each (record, revision), as atomic batches where the stream allows (a batch
        holding a ticket announced already is refused whole, and then announced one by one)."""
        sent = await publish_batches(self._js, WORK_STREAM, [_ticket(r, rev) for r, rev in ready])
        await gather_bounded(self.announce(*ready[i]) for i, seq in enumerate(sent) if seq is None)

    async def get(self, route: str) -> Route | None:
        """The registered route named ``route`` (None if unknown or unreadable)."""
        entry = await self._bucket.get(route)
        return None if entry is None else _parse_route(route, entry.value)

    async def watch(self) -> AsyncGenerator[Route, None]:
        """Every route, existing ones first, then new ones as they are registered."""
        async for key, value in watch_values(self._js, ROUTES_BUCKET):
            route = _parse_route(key, value)
            if route is not None:
                yield route


def _ticket(record: TaskRecord, revision: int) -> tuple[str, bytes, dict[str, str]]:
    """Subject, payload and headers of the ticket of ``record`` at ``revision``."""
    task = record.task
    # As read (the wire's context): a record a newer version wrote keeps the fields this one does
    # not know, and the ticket carries them on, as a rewrite of the record does.
    ticket = Ticket.model_validate(
        {"task_id": task.id, "route": task.route, "revision": revision, "record": record},
        context={"wire": True},
    )
    subject = work_subject(task.route, express=task.express)
    return subject, wire_bytes(ticket), {"Nats-Msg-Id": f"ticket-{task.id}"}


def _parse_route(key: str, value: bytes) -> Route | None:
    """The ``Route`` stored under ``key``, or None (logged) when the value does not validate."""
    return parse_or_none(Route, value, where=f"{ROUTES_BUCKET}/{key}")
