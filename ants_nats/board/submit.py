"""Submission: validating a batch of tasks, writing their records, and announcing the ready ones."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import JsonValue

from .. import matching, tracing
from .._aio import gather_bounded
from .._store import Conflict
from ..artifacts import ref_of
from ..dag import check_batch
from ..errors import InvalidTask, PayloadTooLarge, TaskExists, TaskNotFound, UnknownDependency
from ..identity import SIG_HEADER, Identity
from ..log import get_logger
from ..models import PROTOCOL_VERSION, Budget, Task, TaskRecord, TaskStatus, parse_or_none, wire_bytes
from ._core import Core, json_encoded
from .chain import sign_revision
from .propagate import Propagation

log = get_logger("board")

_CARDS_MAX_AGE_S = 1.0
"""How long a submitter reuses the cards it read to tell whether a task is routable."""


class Submission:
    """Submitting tasks to one board."""

    def __init__(self, core: Core, propagation: Propagation) -> None:
        self._core = core
        self._propagation = propagation

    async def submit_many(
        self, tasks: Sequence[Task | Mapping[str, Any]], budget: Budget | None = None
    ) -> list[TaskRecord]:
        """See ``TaskBoard.submit_many``."""
        return [record for record, _ in await self.submit_revisions(tasks, budget)]

    async def submit_revisions(
        self, tasks: Sequence[Task | Mapping[str, Any]], budget: Budget | None = None
    ) -> list[tuple[TaskRecord, int]]:
        """``submit_many``, each record with its revision (what a wait for it starts from)."""
        with tracing.submitting() as trace:
            return await self._submit_many(tasks, trace, budget)

    async def _submit_many(
        self, tasks: Sequence[Task | Mapping[str, Any]], trace: tracing.Submission, budget: Budget | None
    ) -> list[tuple[TaskRecord, int]]:
        core, propagation = self._core, self._propagation
        validated, large = await self._validated(tasks, trace)
        batch = await self._budgeted(validated, budget)
        # Everything is checked before a large payload is stored: a refused submission writes
        # nothing (a concurrent submission of the same id with another definition aside).
        for task in batch:
            if task.id in large:
                await self._same_task_exists(task)
        for name, payload in large.values():
            await core.artifacts.put(name, payload)
        dependents: dict[str, list[str]] = {task.id: [] for task in batch}
        for task in batch:
            for dep in task.depends_on:
                if dep in dependents:
                    dependents[dep].append(task.id)
        unroutable = await self._unroutable(batch)
        signers = self._signers(batch)
        records = {
            task.id: TaskRecord(
                task=task,
                owner_key=signers[task.id].public_key if task.id in signers else None,
                v=PROTOCOL_VERSION,
                status=TaskStatus.PENDING,
                waiting_on=task.depends_on,
                dependents=tuple(sorted(dependents[task.id])),
                unroutable=unroutable[task.id][0] if task.id in unroutable else None,
                unroutable_reason=unroutable[task.id][1] if task.id in unroutable else None,
            )
            for task in batch
        }
        written = await self._create(records, signers)
        existing: set[str] = set()
        try:
            for task in batch:
                if task.id not in written:
                    if not await self._same_task_exists(task):
                        raise TaskExists(f"task {task.id!r} was submitted concurrently by someone else")
                    existing.add(task.id)
        except TaskExists:
            await self._withdraw(written, signers)
            raise

        for requires, express in sorted({(task.requires, task.express) for task in batch}):
            await core.routes.register(requires, express=express)
        failing: list[str] = []  # unroutable tasks whose submitter asked them to fail at once
        for task in batch:
            if task.id in written:
                await self._submitted(task, records[task.id], signers.get(task.id))
                record = records[task.id]
                if record.unroutable_reason is not None:
                    reason = record.unroutable_reason
                    log.warning("task.unroutable", task_id=task.id, reason=reason)
                    data: JsonValue = {"missing": list(record.unroutable or ()), "reason": reason}
                    await core.event("task.unroutable", task.id, data=data)
                    if task.fail_unroutable:
                        failing.append(task.id)
            elif await core.trail.last("task.submitted", task.id) is None:
                await self._submitted(task, records[task.id], signers.get(task.id))
        for task_id in failing:
            reason = records[task_id].unroutable_reason or "unroutable"
            await propagation.finish_unclaimed(task_id, TaskStatus.FAILED, reason, event="task.failed")

        for task in batch:
            for dep in task.depends_on:
                if dep not in written or task.id in existing:
                    await propagation.attach(task.id, dep)  # announces it if now ready
        ready = [
            task for task in batch if task.id in written and not task.depends_on and task.id not in failing
        ]
        await propagation.announce_many([(records[t.id], written[t.id]) for t in ready])
        final = {task.id: (records[task.id], written[task.id]) for task in ready}
        # The others are returned as written, without a round trip a task to read them again.
        for task_id in _as_written(batch, written, dependents, failing):
            final.setdefault(task_id, (records[task_id], written[task_id]))
        for task in batch:
            if task.id in final:
                continue
            record, revision = await core.get_entry(task.id)  # dependencies may have changed it
            if task.id in existing and record.ready:
                await propagation.announce(record, revision)  # finishes an interrupted submission
            final[task.id] = record, revision
        return [final[task.id] for task in batch]

    async def _budgeted(self, batch: list[Task], budget: Budget | None) -> list[Task]:
        """The batch charged to ``budget`` (opened now, or the same one opened before), after
        checking that every budget its tasks name exists."""
        if budget is not None:
            for task in batch:
                if task.budget not in (None, budget.id):
                    raise InvalidTask(f"task {task.id!r} names budget {task.budget!r}, not {budget.id!r}")
            batch = [task.model_copy(update={"budget": budget.id}) for task in batch]
            signer = self._signers(batch[:1]).get(batch[0].id) if batch else None
            await self._core.budgets.open(budget, signer)
        opened = {budget.id} if budget is not None else set()
        for named in sorted({task.budget for task in batch if task.budget is not None} - opened):
            if await self._core.budgets.get(named) is None:
                raise InvalidTask(f"no budget {named!r}: open it with the submission that carries it")
        return batch

    async def _validated(
        self, tasks: Sequence[Task | Mapping[str, Any]], trace: tracing.Submission
    ) -> tuple[list[Task], dict[str, tuple[str, bytes]]]:
        """The batch as tasks to write, a large payload replaced by its artifact's reference, and
        the artifacts to store (name and bytes, by task id); or the first reason to reject it.
        Nothing is written."""
        config = self._core.config
        if isinstance(tasks, str | bytes | Mapping) or not isinstance(tasks, Sequence):
            raise InvalidTask(f"submit_many takes a list of tasks, not {type(tasks).__name__}")
        batch = trace.stamp([parse_task(task) for task in tasks])
        large: dict[str, bytes] = {}  # the JSON of each payload kept as an artifact
        for task in batch:
            encoded = json_encoded(task.payload, what=f"payload of task {task.id!r}")
            if len(encoded) > config.max_payload_bytes:
                raise PayloadTooLarge(f"payload of task {task.id!r}", len(encoded), config.max_payload_bytes)
            if len(encoded) > config.inline_bytes:
                large[task.id] = encoded
        check_batch(batch)
        ids = {task.id for task in batch}
        external = sorted({dep for task in batch for dep in task.depends_on if dep not in ids})
        entries = await gather_bounded(self._core.tasks.get(d) for d in external)
        for dep, entry in zip(external, entries, strict=True):
            if entry is None:
                raise UnknownDependency(f"dependency {dep!r} is not on the board nor in the submission")
            record = parse_or_none(TaskRecord, entry.value, where=f"dependency {dep}")
            if record is not None:  # a DAG submitted in parts: link to its earlier submissions
                trace.link(record.task.trace)
        artifacts = {
            task_id: (_payload_name(task_id, payload), payload) for task_id, payload in large.items()
        }
        offloaded = [
            task.model_copy(update={"payload": None, "payload_ref": ref_of(*artifacts[task.id])})
            if task.id in artifacts
            else task
            for task in batch
        ]
        return offloaded, artifacts

    async def _withdraw(self, written: Mapping[str, int], signers: Mapping[str, Identity]) -> None:
        """Remove the records a rejected batch wrote before the rejection was known (nothing has
        announced them yet, so nobody else can have touched them)."""
        for task_id, revision in written.items():
            signer = signers.get(task_id)
            subject = self._core.tasks.subject(task_id)
            headers = sign_revision(signer, subject, revision, b"") if signer else None
            with contextlib.suppress(Conflict):
                await self._core.tasks.delete(task_id, last=revision, headers=headers)

    async def _unroutable(self, batch: Sequence[Task]) -> dict[str, tuple[tuple[str, ...], str]]:
        """For each task of ``batch`` that no live agent can take: the capabilities nobody
        announces (empty when only its kind is not handled) and why, in words.

        A recent reading of the cards is enough to see that a task can be taken; only a task that
        looks unroutable pays for a fresh reading."""
        cards = await self._core.directory.cards(max_age=_CARDS_MAX_AGE_S)
        if any(matching.unroutable_because(cards, task) for task in batch):
            cards = await self._core.directory.cards()
        because = {task.id: matching.unroutable_because(cards, task) for task in batch}
        return {task_id: why for task_id, why in because.items() if why is not None}

    async def _same_task_exists(self, task: Task) -> bool:
        """False if ``task.id`` is free; True if the board holds this very task; else ``TaskExists``."""
        try:
            record, _ = await self._core.get_entry(task.id)
        except TaskNotFound:
            return False
        if record.task.model_copy(update={"trace": None}) != task.model_copy(update={"trace": None}):
            raise TaskExists(f"task {task.id!r} is already on the board with a different definition")
        return True

    async def _create(
        self, records: Mapping[str, TaskRecord], signers: Mapping[str, Identity]
    ) -> dict[str, int]:
        """Write the new ``records`` (signed by ``signers``, on a signed board); the revision of
        each one written (a key taken already is left out)."""
        core = self._core
        values = {task_id: wire_bytes(record) for task_id, record in records.items()}
        signatures: dict[str, dict[str, str]] = {}

        def sign(subject: str, prev: int, value: bytes) -> dict[str, str]:
            task_id = subject.rsplit(".", 1)[1]
            signature = signatures[task_id] = sign_revision(signers[task_id], subject, prev, value)
            return signature

        revisions = await core.tasks.create_many(list(values.items()), sign=sign if signers else None)
        written = {task_id: rev for task_id, rev in zip(values, revisions, strict=True) if rev is not None}
        for task_id, signature in signatures.items():
            if task_id in written:
                core.remember(records[task_id], values[task_id], written[task_id], signature, last=0)
        return written

    def _signers(self, batch: Sequence[Task]) -> dict[str, Identity]:
        """On a signed board, who signs each task of ``batch``: its submitter (``created_by``),
        whose identity this board must hold; ``InvalidTask`` otherwise."""
        core = self._core
        if not core.signed:
            return {}
        unsigned = sorted({t.created_by for t in batch if t.created_by not in core.identities})
        if unsigned:
            raise InvalidTask(
                f"the board is signed: tasks created by {', '.join(map(repr, unsigned))} need that "
                "submitter's identity (TaskBoard.sign_as, or the CLI's --seed-file)"
            )
        return {t.id: core.identities[t.created_by] for t in batch}

    async def _submitted(self, task: Task, record: TaskRecord, signer: Identity | None) -> None:
        data: dict[str, JsonValue] = {
            "kind": task.kind,
            "requires": list(task.requires),
            "depends_on": list(task.depends_on),
            "ready": not task.depends_on,
        }
        if signer is not None:
            # The proof of the task's creation: whoever finds its history erased restores it from here.
            value = wire_bytes(record)
            data["record"] = json.loads(value)
            data["sig"] = sign_revision(signer, self._core.tasks.subject(task.id), 0, value)[SIG_HEADER]
        await self._core.event("task.submitted", task.id, agent=task.created_by, data=data)


def _as_written(
    batch: Sequence[Task], written: Mapping[str, int], dependents: Mapping[str, list[str]], failing: list[str]
) -> set[str]:
    """The tasks of ``batch`` whose records nobody changed in this submission after writing them:
    those written, unless they or one they wait on in the batch were linked to a task outside it
    or failed at once. As written, such a record is a true state (agents may have moved it on
    since, as they may a record read)."""
    touched = {
        task.id for task in batch if task.id not in written or not set(task.depends_on) <= written.keys()
    } | set(failing)
    below = list(touched)
    while below:
        for dependent in dependents[below.pop()]:
            if dependent not in touched:
                touched.add(dependent)
                below.append(dependent)
    return {task.id for task in batch} - touched


def parse_task(task: Task | Mapping[str, Any]) -> Task:
    """``task`` as a validated ``Task``; ``InvalidTask`` naming every problem."""
    return task if isinstance(task, Task) else Task.model_validate(task)


def _payload_name(task_id: str, payload: bytes) -> str:
    """The artifact of a large payload is named by its content, so submitting the same task again
    is still the same task, and a different task under a taken id cannot overwrite the payload of
    the one on the board."""
    return f"{task_id}/payload-{hashlib.sha256(payload).hexdigest()[:16]}"
