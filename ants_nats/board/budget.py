"""Budgets: what a submission may spend, in tokens and/or cost, kept with no accountant process.

A budget is one key (``ants_budgets/<id>``) that the tasks of a submission name (``Task.budget``).
Each attempt's reported usage is added to it by compare-and-set when the attempt ends, once per
attempt (a retried ending charges nothing again); a claim of one of its tasks reads it first, and
once it is spent the task fails unclaimed with the reason (its dependents are blocked as usual).
Work in flight when it runs out still finishes: a budget is checked before work starts, not during
it. A charge lost to a crash between an attempt's end and its charge is not recovered: the budget
errs towards letting work through.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from .._store import Bucket, Conflict, ensure_kv
from ..errors import InvalidTask
from ..identity import Identity, verify
from ..log import get_logger
from ..models import Budget, TaskRecord, Usage, parse_or_none, wire_bytes
from ..names import BUDGETS_BUCKET

log = get_logger("budgets")

CHARGES_KEPT = 256
"""Attempts a budget remembers having charged (a retry comes within seconds, not 256 attempts)."""


class Budgets:
    """The budgets of one board (``ants_budgets``)."""

    def __init__(self, js: JetStreamContext, *, replicas: int) -> None:
        self._js = js
        self._replicas = replicas
        self._bucket = Bucket(js, BUDGETS_BUCKET)

    async def ensure(self) -> None:
        """Create the bucket unless it exists."""
        await ensure_kv(self._js, BUDGETS_BUCKET, replicas=self._replicas, history=1)

    async def open(self, budget: Budget, signer: Identity | None = None) -> Budget:
        """Create ``budget``, or accept the one stored under its id when its limits are the same (a
        submission made again); ``InvalidTask`` when they differ. Garbage under its key (no honest
        writer makes it) is replaced. With ``signer`` (a signed board's submitter) its limits are
        signed: readers then refuse limits anyone else wrote (``forged``)."""
        if signer is not None:
            owned = budget.model_copy(update={"owner_key": signer.public_key})
            budget = owned.model_copy(update={"sig": signer.sign(owned.limits_bytes())})
        while True:
            entry = await self._bucket.get(budget.id)
            stored = None if entry is None else _parse(budget.id, entry.value)
            try:
                if entry is None:
                    await self._bucket.create(budget.id, wire_bytes(budget))
                elif stored is None:
                    await self._bucket.update(budget.id, wire_bytes(budget), last=entry.revision)
                    log.warning("budget.replaced_garbage", budget=budget.id)
                else:
                    if (stored.tokens, stored.cost) != (budget.tokens, budget.cost):
                        raise InvalidTask(
                            f"budget {budget.id!r} exists with other limits "
                            f"(tokens={stored.tokens}, cost={stored.cost}): give this one another id"
                        )
                    return stored
            except Conflict:
                continue  # someone wrote it meanwhile: look again
            log.info("budget.opened", budget=budget.id, tokens=budget.tokens, cost=budget.cost)
            return budget

    async def get(self, budget_id: str) -> Budget | None:
        """The budget ``budget_id`` (None if there is none, or it does not validate)."""
        entry = await self._bucket.get(budget_id)
        return None if entry is None else _parse(budget_id, entry.value)

    async def spent_for(self, record: TaskRecord, *, signed: bool) -> str | None:
        """Why the budget ``record``'s task is charged to lets nothing more be spent (spent, or on
        a ``signed`` board not its owner's), or None (no budget, or one with something left)."""
        if record.task.budget is None:
            return None
        budget = await self.get(record.task.budget)
        if budget is None:
            return None
        return (forged(budget, record.owner_key) if signed else None) or budget.exhausted_because

    async def charge(self, budget_id: str, usage: Usage, key: str) -> Budget | None:
        """Add ``usage`` to what ``budget_id`` has spent, once per ``key`` (the attempt's: a retried
        ending charges nothing again); None if there is no such budget."""
        while True:
            entry = await self._bucket.get(budget_id)
            budget = None if entry is None else _parse(budget_id, entry.value)
            if entry is None or budget is None:
                log.warning("budget.missing", budget=budget_id)
                return None
            if key in budget.charged:
                return budget
            charged = (*budget.charged[-(CHARGES_KEPT - 1) :], key)
            spent = budget.model_copy(update={"spent": budget.spent + usage, "charged": charged})
            try:
                await self._bucket.update(budget_id, wire_bytes(spent), last=entry.revision)
            except Conflict:
                continue
            if spent.exhausted_because and not budget.exhausted_because:
                log.info("budget.spent", budget=budget_id, reason=spent.exhausted_because)
            return spent


def forged(budget: Budget, owner_key: str | None) -> str | None:
    """Why ``budget``'s limits are not those its owner (``owner_key``, the task's) signed, or
    None. A forged budget counts as spent: nobody spends more than its owner allowed."""
    if owner_key is None:
        return None
    if budget.owner_key != owner_key or budget.sig is None:
        return f"budget {budget.id!r} is not its owner's (its limits were rewritten): it counts as spent"
    if not verify(owner_key, budget.limits_bytes(), budget.sig):
        return f"budget {budget.id!r} has limits its owner did not sign: it counts as spent"
    return None


def _parse(budget_id: str, value: bytes) -> Budget | None:
    budget = parse_or_none(Budget, value, where=f"{BUDGETS_BUCKET}/{budget_id}")
    return budget if budget is not None and budget.id == budget_id else None
