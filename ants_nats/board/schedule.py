"""Periodic and one-off tasks with no scheduler process: the NATS server keeps the time.

``TaskBoard.schedule`` writes a ``Schedule`` on ``ants.schedule.<name>`` in stream ``ANTS_SCHEDULES``
with the headers ``Nats-Schedule`` (its timing) and ``Nats-Schedule-Target: ants.fire.<name>`` (a
server message schedule, ADR-51). At each firing the server copies the schedule to
``ants.fire.<name>``. Every agent pulls from one durable consumer of the firings
(``schedule_relay``), so each firing reaches one agent, which submits the task
``<name>-<fire time>`` and acks.

The stream keeps one message per subject: firings missed while no agent runs collapse to the latest
one (one catch-up task, not a backlog), and a firing relayed twice (a crash before its ack) submits
the same id again, which submission takes as the same task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
import pydantic
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from .._pull import Puller, fetch_patiently
from .._store import ensure_consumer, ensure_stream, last_message, patiently, publish, translate_errors
from ..errors import AntsError, InvalidSchedule, InvalidTask, ScheduleNotFound, ServerUnavailable, TaskExists
from ..log import get_logger
from ..models import Schedule, Task, TaskRecord, parse_or_none, wire_bytes
from ..names import (
    FIRE_SUBJECT_PREFIX,
    MAX_SCHEDULE_NAME_LENGTH,
    SCHEDULE_RELAY_CONSUMER,
    SCHEDULE_SUBJECT_PREFIX,
    SCHEDULES_STREAM,
    fire_subject,
    is_valid_id,
    schedule_subject,
)
from ._core import Core, json_encoded
from .submit import Submission, parse_task

log = get_logger("schedule")

_RELAY_ACK_WAIT_S = 30.0
"""A firing whose relaying agent vanished before acking is relayed again after this."""
_RELAY_WAIT_S = 10.0
"""How long one pull for firings waits on the server: an idle agent asks six times a minute."""
_RELAY_RETRY_S = 1.0


class Schedules:
    """The schedules of one board, and relaying their firings into tasks."""

    def __init__(self, core: Core, submission: Submission) -> None:
        self._core = core
        self._submission = submission
        self._ready = False

    async def ensure(self) -> None:
        """Create the schedules stream and the relay consumer, where missing (once per board)."""
        if self._ready:
            return
        js, replicas = self._core.js, self._core.config.replicas
        await ensure_stream(
            js,
            StreamConfig(
                name=SCHEDULES_STREAM,
                subjects=[f"{SCHEDULE_SUBJECT_PREFIX}.*", f"{FIRE_SUBJECT_PREFIX}.*"],
                retention=RetentionPolicy.LIMITS,
                max_msgs_per_subject=1,
                storage=StorageType.FILE,
                num_replicas=replicas,
                allow_msg_schedules=True,
            ),
        )
        await ensure_consumer(
            js,
            SCHEDULES_STREAM,
            ConsumerConfig(
                durable_name=SCHEDULE_RELAY_CONSUMER,
                filter_subject=f"{FIRE_SUBJECT_PREFIX}.>",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=_RELAY_ACK_WAIT_S,
                num_replicas=replicas,
            ),
        )
        self._ready = True

    async def add(
        self, name: str, when: str, template: Task | Mapping[str, Any], *, by: str | None = None
    ) -> Schedule:
        """See ``TaskBoard.schedule``."""
        _check_name(name)
        schedule = _schedule(name, normalize_when(when), template, by)
        size = len(json_encoded(schedule.template.payload, what=f"payload of schedule {name!r}"))
        if size > self._core.config.inline_bytes:  # the schedule is one message: no artifacts
            raise InvalidSchedule(
                f"payload of schedule {name!r} is {size} bytes of JSON; "
                f"the limit is {self._core.config.inline_bytes} bytes"
            )
        await self.ensure()
        headers = {"Nats-Schedule": schedule.when, "Nats-Schedule-Target": fire_subject(name)}
        async with translate_errors(f"write schedule {name}"):
            try:
                await publish(self._core.js, schedule_subject(name), wire_bytes(schedule), headers=headers)
            except nats.js.errors.BadRequestError as exc:
                raise InvalidSchedule(
                    f"the server refused schedule {name!r} ({schedule.when!r}): {exc.description}"
                ) from exc
        await self._core.event("schedule.added", name, agent=by, data={"when": schedule.when})
        return schedule

    async def all(self) -> list[Schedule]:
        """See ``TaskBoard.schedules``."""
        await self.ensure()
        js = self._core.js
        info = await patiently(
            js,
            "list schedules",
            lambda: js.stream_info(SCHEDULES_STREAM, subjects_filter=f"{SCHEDULE_SUBJECT_PREFIX}.>"),
        )
        schedules = []
        for subject in sorted(info.state.subjects or {}):
            msg = await last_message(js, SCHEDULES_STREAM, subject, action="read schedule")
            schedule = None if msg is None else parse_or_none(Schedule, msg.data or b"", where=subject)
            if schedule is not None:
                schedules.append(schedule)
        return schedules

    async def remove(self, name: str, *, by: str | None = None) -> None:
        """See ``TaskBoard.unschedule``."""
        _check_name(name)
        await self.ensure()
        js = self._core.js
        subject = schedule_subject(name)
        if await last_message(js, SCHEDULES_STREAM, subject, action=f"read schedule {name}") is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        # A firing not yet relayed goes with it.
        for purged in (subject, fire_subject(name)):
            await patiently(js, f"remove schedule {name}", _purge(js, purged))
        await self._core.event("schedule.removed", name, agent=by)

    async def relay(self, msg: Msg) -> TaskRecord | None:
        """Submit the task of one firing and ack it; None when the firing submits nothing.

        ``ServerUnavailable`` leaves the firing un-acked, to be relayed again."""
        schedule = parse_or_none(Schedule, msg.data, where=msg.subject)
        if schedule is None:
            await msg.term()  # never valid: relaying it again would only loop
            return None
        # A periodic schedule fires on whole seconds (the server's timing is to the second).
        fired_at = schedule.once_at or msg.metadata.timestamp.replace(microsecond=0)
        task = schedule.task_for(fired_at)
        try:
            record = (await self._submission.submit_many([task]))[0]
        except TaskExists as exc:  # the schedule changed within the second it fired in
            log.warning("schedule.firing_conflict", schedule=schedule.name, task_id=task.id, error=str(exc))
            record = None
        except ServerUnavailable:
            raise  # relayed again (the firing stays un-acked)
        except AntsError as exc:  # invalid now (stricter limits), refused, corrupt: never loop on it
            log.error("schedule.firing_dropped", schedule=schedule.name, task_id=task.id, error=str(exc))
            await msg.term()
            return None
        await msg.ack()
        log.info("schedule.fired", schedule=schedule.name, task_id=task.id)
        return record

    async def relay_forever(self) -> None:
        """Relay firings into tasks until cancelled (every agent runs this; each firing reaches one)."""
        try:
            await self.ensure()
        except ServerUnavailable:
            raise  # the agent starts this loop again
        except AntsError as exc:  # refused: e.g. a server older than 2.12, without message schedules
            log.warning("schedule.relay_unavailable", error=str(exc))
            return
        self._ready = False  # a loop started again checks the stream and consumer again
        async with Puller(self._core.nc, SCHEDULES_STREAM, SCHEDULE_RELAY_CONSUMER) as puller:
            while True:
                msg = await fetch_patiently(puller, _RELAY_WAIT_S)
                if msg is None:
                    continue
                try:
                    await self.relay(msg)
                except ServerUnavailable as exc:
                    log.warning("schedule.relay_failed", subject=msg.subject, error=str(exc))
                    await msg.nak(delay=_RELAY_RETRY_S)


def _purge(js: JetStreamContext, subject: str) -> Callable[[], Awaitable[bool]]:
    return lambda: js.purge_stream(SCHEDULES_STREAM, subject=subject)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not is_valid_id(name) or len(name) > MAX_SCHEDULE_NAME_LENGTH:
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: use 1-{MAX_SCHEDULE_NAME_LENGTH} of A-Z a-z 0-9 _ -, "
            "starting alphanumeric"
        )


def _schedule(name: str, when: str, template: Task | Mapping[str, Any], by: str | None) -> Schedule:
    """The schedule to write, its template's id set to the schedule's name (firings replace it)."""
    if isinstance(template, Mapping):
        template = {**template, "id": name}
    try:
        task = parse_task(template).model_copy(update={"id": name})
        return Schedule(name=name, when=when, template=task, created_by=by or "anonymous")
    except InvalidTask as exc:
        raise InvalidSchedule(f"template of schedule {name!r}: {exc}") from exc
    except pydantic.ValidationError as exc:
        raise InvalidSchedule(f"schedule {name!r}: {exc.errors()[0]['msg']}") from exc


def normalize_when(when: str) -> str:
    """``when`` as the server's ``Nats-Schedule`` header: a 5-field cron line gets second 0, an
    ``@at`` time becomes RFC 3339 UTC. The server judges the rest (and refuses what it cannot run)."""
    if not isinstance(when, str) or not when.strip():
        raise InvalidSchedule("a schedule needs a timing, e.g. '@every 1m' or '0 3 * * *'")
    text = " ".join(when.split())
    if text.startswith("@at "):
        raw = text.removeprefix("@at ")
        try:
            at = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise InvalidSchedule(f"@at {raw!r} is not an ISO 8601 time") from exc
        if at.tzinfo is None:
            raise InvalidSchedule(f"@at {raw!r} needs a time zone, e.g. 2026-01-01T03:00:00Z")
        return f"@at {at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    if text.startswith("@"):
        return text
    fields = text.split(" ")
    if len(fields) == 5:
        return f"0 {text}"
    if len(fields) != 6:
        raise InvalidSchedule(f"cron line {when!r} has {len(fields)} fields: give 5 or 6 (seconds first)")
    return text
