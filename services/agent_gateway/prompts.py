"""A prompt becomes a task on the board, and the caller's stream follows the task to its end."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from contextlib import aclosing
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING

import nats.errors
import pydantic
from pydantic import JsonValue

from ants_nats import (
    AgentProtocolError,
    AntsError,
    InvalidTask,
    RateLimited,
    Task,
    TaskBoard,
    TaskExists,
    TaskFailed,
    TaskNotFound,
    TaskRecord,
    Throttle,
    TrailEvent,
    matching,
)
from ants_nats._aio import cancel_and_wait
from ants_nats.agent_protocol import host_sdk, progress_status, response_text, sdk
from ants_nats.log import get_logger

from .routes import Coverage, RouteSpec

if TYPE_CHECKING:
    from synadia_ai.agent_service import PromptStream
    from synadia_ai.agents import Envelope

log = get_logger("agent_gateway")

IDEMPOTENCY_FIELD = "idempotency_key"
"""The envelope's extension field (§5.6) naming the task a prompt is."""
MAX_KEY_LENGTH = 1024

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""A task id (docs/protocol.md): a key that is one is the task's id as it is."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def task_id_for(key: str | None) -> str:
    """The task a prompt is: its idempotency key when that is a valid task id, else derived from
    the key (the same key, the same task), or a fresh id without a key."""
    if key is None:
        return f"prompt-{uuid.uuid4().hex}"
    if _TASK_ID.match(key):
        return key
    return f"prompt-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


class Prompts:
    """Serves the prompts of every presented route: submit (or find) the task, follow it, answer.

    Errors are §9 statuses: 400 an invalid envelope or task, 404 nobody to take it, 409 the key
    naming another task, 429 work the swarm holds back, 504 a task not finished within
    ``max_wait``, 500 a task that failed, died or was cancelled."""

    def __init__(
        self, board: TaskBoard, coverage: Coverage, throttle: Throttle, *, creator: str, max_wait: float
    ) -> None:
        self._sdk: ModuleType = sdk()
        self._host: ModuleType = host_sdk()
        self._board = board
        self._coverage = coverage
        self._throttle = throttle
        self._creator = creator
        self._max_wait = max_wait

    async def serve(self, spec: RouteSpec, envelope: Envelope, stream: PromptStream) -> None:
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
                created_by=self._creator,
            )
        except InvalidTask as exc:
            raise _refused(400, f"the prompt makes no valid task: {exc}") from exc
        # A task already on the board is followed whoever is alive: it may be done.
        if key is None or not await self._exists(task.id):
            await self._admit(spec)
        try:
            record = await self._board.submit(task)
        except TaskExists as exc:
            raise _refused(409, f"{IDEMPOTENCY_FIELD} {key!r} names another task: {exc}") from exc
        except InvalidTask as exc:
            raise _refused(400, str(exc)) from exc
        except RateLimited as exc:
            raise _refused(429, str(exc)) from exc
        log.info("gateway.prompt", route=spec.route, task_id=task.id, status=record.status.value)
        await stream.send(self._sdk.StatusChunk(status=f"task {task.id} {record.status.value}"))
        return task.id

    async def _admit(self, spec: RouteSpec) -> None:
        """Turn away a new task that would only wait: 404 when no live agent can take it (the
        reason in the board's words, as ``tasks`` would show it; nothing is submitted, as for any
        refusal, so a caller prompts again once an able agent is there), 429 while the swarm
        holds its work back."""
        reason = await self._coverage.unserved_now(spec)
        if reason is not None:
            raise _refused(404, reason)
        held = self._throttle.held_for(spec.requires)
        if held > 0:
            raise _refused(
                429, f"a provider rate-limited this work: the swarm holds it back (retry after {held:.3g}s)"
            )

    async def _exists(self, task_id: str) -> bool:
        try:
            await self._board.get(task_id)
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
                async with aclosing(self._board.trail.watch(reports, since=_EPOCH)) as events:
                    async for event in events:
                        await relayed.send(event)
            except (AntsError, nats.errors.Error) as exc:  # the result still comes, and the rest after it
                log.warning("gateway.progress_lost", task_id=task_id, error=str(exc))

        forwarder = asyncio.create_task(forward(), name=f"gateway:progress:{task_id}")
        try:
            async with asyncio.timeout(self._max_wait):
                await self._until_ended(task_id, stream)
            result = await self._board.result(task_id)
        except TimeoutError as exc:
            raise _refused(
                504,
                f"task {task_id} has not finished within {self._max_wait:g}s; "
                f"prompt again with the same {IDEMPOTENCY_FIELD} to follow it",
            ) from exc
        except TaskFailed as exc:
            raise _refused(500, str(exc)) from exc
        except TaskNotFound as exc:
            raise _refused(404, str(exc)) from exc
        finally:
            await cancel_and_wait([forwarder])
        # Reports laid before the task ended but not delivered yet by the watch come first.
        for event in await self._board.trail.replay(reports):
            await relayed.send(event)
        return result

    async def _until_ended(self, task_id: str, stream: PromptStream) -> None:
        """Watch the record of ``task_id`` until the task ends, telling the caller each time it
        becomes unroutable, why (a status ``task <id> unroutable: <reason>``).

        A task nobody can take ends the prompt with a 404 rather than holding the stream for
        ``max_wait``: that is the status a new task gets when nobody can take it, and the task
        keeps its place on the board (it runs once an able agent joins), so a caller with a key
        prompts again to follow it. A "not now" decline still pending is no such end: the task
        comes back by itself."""
        said: str | None = None
        async with aclosing(self._board.watch([task_id])) as records:
            async for record in records:
                if record.status.terminal:
                    return
                reason = record.unroutable_reason
                if reason is not None and reason != said:
                    await stream.send(self._sdk.StatusChunk(status=f"task {task_id} unroutable: {reason}"))
                said = reason
                if reason is not None and await self._stranded(record):
                    raise _refused(
                        404,
                        f"task {task_id} is unroutable: {reason}; it runs once an able agent joins "
                        f"(prompt again with the same {IDEMPOTENCY_FIELD} to follow it)",
                    )

    async def _stranded(self, record: TaskRecord) -> bool:
        """Whether no live agent will take the task of ``record`` (marked unroutable) unless one
        joins or changes its offer: no "not now" decline is pending, and the directory, read
        afresh, agrees (an agent that has just joined brings it back)."""
        if record.declines_lapse() is not None:
            return False
        return matching.declined_by_all(await self._board.directory.cards(), record) is not None


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
