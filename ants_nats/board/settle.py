"""Settling: how a holder ends its claim (completed, failed, released or declined).

Every ending is one CAS on the revision the holder last wrote, fenced by its token, followed by
the outcome event (acked before the ticket is) and the outcome's consequences for dependents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import JsonValue

from ..errors import InvalidTask, LeaseLost, PayloadTooLarge
from ..models import ArtifactRef, Outcome, TaskRecord, TaskStatus, Usage, utcnow
from ..names import BAD_RESULT_MARK
from ._core import Core, json_encoded
from .claim import Claims
from .lease import Lease, attempt_of, claim_facts, holds
from .propagate import Propagation


class Settlement:
    """Outcomes of claims on one board."""

    def __init__(self, core: Core, claims: Claims, propagation: Propagation) -> None:
        self._core = core
        self._claims = claims
        self._propagation = propagation

    async def end(
        self,
        lease: Lease,
        outcome: Outcome,
        change: Callable[[TaskRecord], dict[str, Any]] | dict[str, Any],
        *,
        error: str | None = None,
        result: JsonValue = None,
        result_ref: ArtifactRef | None = None,
        usage: Usage | None = None,
    ) -> TaskRecord:
        """End ``lease``'s attempt with ``outcome``: only with the current token, then drop its lease key.
        ``usage`` is what the attempt spent (an empty one is the same as none: kept nowhere).

        Every ending lets go of the task and appends the attempt; ``change`` adds what this ending
        sets (status, result, error), given the record with that attempt (or the same whatever
        the record: a dict, made in one copy of the record). The CAS is on the revision the
        holder last wrote, so it succeeds at once unless someone else wrote since; then the fresh
        record must still name this holder and token, or already end with this very attempt (a
        retry after a write whose answer was lost: it changes nothing and succeeds)."""
        if lease._ticket is None:
            try:
                await self._claims.check_lease_key(lease)
            except LeaseLost:
                # The key is gone; the record decides: written already (the answer was lost), or
                # still ours (a deleted key, nobody took over: the CAS below fences the write).
                record, _ = await self._core.get_entry(lease.task_id)
                if _ended_with(record, lease, outcome, error, (result, result_ref)):
                    return record
                if not holds(lease, record):
                    raise
                lease._lease_revision = 0  # nothing of ours left to drop
        attempt = attempt_of(
            lease, outcome, utcnow(), error, usage or None, key=self._core.key_of(lease.agent_id)
        )

        def ended(record: TaskRecord) -> TaskRecord | None:
            if not holds(lease, record):
                if _ended_with(record, lease, outcome, error, (result, result_ref)):
                    return None  # this very ending was written already (its answer was lost)
                raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
            # A deferred claim's outcome is its first write: it records the claim's token too.
            # A decline is no attempt: ``change`` notes it among the record's declines instead.
            attempts = record.attempts if outcome == "declined" else (*record.attempts, attempt)
            update = {
                "holder": None,
                "holder_key": None,
                "ticket": None,
                "token": lease.token,
                "claimed_at": lease.started_at,
                "unroutable": None,
                "unroutable_reason": None,
                "attempts": attempts,
                "updated_at": utcnow(),
            }
            if isinstance(change, dict):
                return record.model_copy(update={**update, **change})
            let_go = record.model_copy(update=update)
            return let_go.model_copy(update=change(let_go))

        final, _ = await self._core.mutate(
            lease.task_id, ended, known=(lease._record, lease._revision), by=lease.agent_id, stamped=True
        )
        if lease._ticket is None and lease._lease_revision:
            await self._claims.drop_lease(lease.task_id, lease.agent_id, lease._lease_revision)
        if usage and lease.task.budget is not None:
            # Keyed by the attempt: a retry after a lost answer charges nothing again.
            attempt_key = f"{lease.task_id}.{lease.token}.{outcome}"
            signer = self._core.signer(lease.agent_id)
            await self._core.budgets.charge(lease.task.budget, usage, attempt_key, signer)
        return final

    async def complete(
        self, lease: Lease, result: JsonValue = None, *, usage: Usage | None = None
    ) -> TaskRecord:
        """See ``TaskBoard.complete``."""
        config = self._core.config
        encoded = json_encoded(result, what=f"result of task {lease.task_id!r}")
        if len(encoded) > config.max_payload_bytes:
            raise PayloadTooLarge(f"result of task {lease.task_id!r}", len(encoded), config.max_payload_bytes)
        ref = None
        if len(encoded) > config.inline_bytes:
            # Named by the claim: a stale holder can never overwrite the current holder's result.
            name = f"{lease.task_id}/result-{lease.token}-{lease.agent_id}"
            ref = await self._core.artifacts.put(name, encoded)
            result = None
        final = await self.end(
            lease,
            "completed",
            {"status": TaskStatus.DONE, "result": result, "result_ref": ref, "error": None},
            result=result,
            result_ref=ref,
            usage=usage,
        )
        await self._core.event(
            "task.completed",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data=spent(claim_facts(lease, final), usage),
        )
        await self._propagation.propagate(final, by=lease.agent_id)
        return final

    async def fail(
        self, lease: Lease, error: str, *, retry: bool = True, usage: Usage | None = None
    ) -> TaskRecord:
        """See ``TaskBoard.fail``."""

        def failed(record: TaskRecord) -> dict[str, Any]:
            status = TaskStatus.PENDING
            if not retry:
                status = TaskStatus.FAILED
            elif record.counted_attempts >= lease.task.max_attempts:
                status = TaskStatus.DEAD
            return {"status": status, "error": error}

        final = await self.end(lease, "failed", failed, error=error, usage=usage)
        await self._core.event(
            "task.failed",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data=spent(
                {**claim_facts(lease, final), "error": error, "retry": retry, "status": final.status.value},
                usage,
            ),
        )
        if final.status is TaskStatus.DEAD:
            await self._core.event("task.dead", lease.task_id, data={"error": final.error}, by=lease.agent_id)
        await self._propagation.propagate(final, by=lease.agent_id)
        return final

    async def release(
        self, lease: Lease, *, reason: str | None = None, usage: Usage | None = None
    ) -> TaskRecord:
        """See ``TaskBoard.release``."""
        final = await self.end(lease, "released", {"status": TaskStatus.PENDING}, error=reason, usage=usage)
        await self._core.event(
            "task.released",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data=spent({**claim_facts(lease, final), "reason": reason}, usage),
        )
        return final

    async def progress(self, lease: Lease, fraction: float, note: str = "") -> None:
        """See ``TaskBoard.progress``."""
        if not 0.0 <= fraction <= 1.0:
            raise InvalidTask(f"progress must be within [0, 1], got {fraction}")
        await self._claims.confirm(lease)
        # Fenced like every holder write: a holder whose task was claimed anew lays nothing.
        record, _ = await self._core.get_entry(lease.task_id)
        if not holds(lease, record):
            raise LeaseLost(f"task {lease.task_id!r} was re-claimed; token {lease.token} is stale")
        await self._core.event(
            "task.progress",
            lease.task_id,
            agent=lease.agent_id,
            token=lease.token,
            data={"fraction": fraction, "note": note},
        )

    async def mark_bad(self, task_id: str, reason: str, *, by: str | None = None) -> None:
        """See ``TaskBoard.mark_bad``."""
        record, _ = await self._core.get_entry(task_id)
        completer = next((a.agent for a in reversed(record.attempts) if a.outcome == "completed"), None)
        if record.status is not TaskStatus.DONE or completer is None:
            raise InvalidTask(
                f"task {task_id!r} is {record.status.value}: only a done task's result can be bad"
            )
        await self._core.trail.mark(
            BAD_RESULT_MARK,
            key=task_id,
            agent=by,
            data={"agent": completer, "requires": list(record.task.requires), "reason": reason},
        )


def spent(data: dict[str, JsonValue], usage: Usage | None) -> dict[str, JsonValue]:
    """An outcome event's ``data`` with what the attempt spent, when it reported anything."""
    return {**data, "usage": usage.model_dump(exclude_defaults=True)} if usage else data


def _ended_with(
    record: TaskRecord,
    lease: Lease,
    outcome: Outcome,
    error: str | None,
    result: tuple[JsonValue, ArtifactRef | None],
) -> bool:
    """Whether ``record`` already ends ``lease``'s attempt this very way (outcome, error, result)."""
    if outcome == "declined":
        return any(d.agent == lease.agent_id and d.token == lease.token for d in record.declines)
    last = record.attempts[-1] if record.attempts else None
    if last is None or (last.agent, last.token, last.outcome, last.error) != (
        lease.agent_id,
        lease.token,
        outcome,
        error,
    ):
        return False
    return outcome != "completed" or (record.result, record.result_ref) == result
