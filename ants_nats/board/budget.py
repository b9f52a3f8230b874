"""Budgets: what a submission may spend, in tokens and/or cost, kept with no accountant process.

A budget is one key (``ants_budgets/<id>``) that the tasks of a submission name (``Task.budget``).
Each attempt's reported usage is added to it by compare-and-set when the attempt ends, once per
attempt (a retried ending charges nothing again); a claim of one of its tasks reads it first, and
once it is spent the task fails unclaimed with the reason (its dependents are blocked as usual).
Work in flight when it runs out still finishes: a budget is checked before work starts, not during
it. A charge lost to a crash between an attempt's end and its charge is not recovered: the budget
errs towards letting work through.

On a signed board a budget is a chain (see ``chain``): its owner signs its creation and limits,
each charge is signed by its agent, and every reader checks each step (``Spending``): the limits
stay the owner's, nothing spent ever goes down. A forged revision is undone by its next reader and
its signer named; a budget whose history was erased counts as spent.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from .._store import Bucket, Conflict
from ..errors import CorruptEntry, InvalidTask
from ..identity import Identity, verify
from ..log import get_logger
from ..models import Budget, TaskRecord, Usage, parse_or_none, wire_bytes
from ..names import BUDGETS_BUCKET
from .chain import TALLY_DEPTH, Forged, Link, Rules, Tally, Witness

log = get_logger("budgets")

CHARGES_KEPT = 256
"""Attempts a budget remembers having charged (a retry comes within seconds, not 256 attempts)."""

State = Budget | str | None
"""A budget as its readers judge it: the budget, why nothing may be spent of it (its history was
erased), or None (there is none)."""


class Budgets:
    """The budgets of one board (``ants_budgets``)."""

    def __init__(self, js: JetStreamContext, *, replicas: int, witness: Witness | None = None) -> None:
        self._js = js
        self._replicas = replicas
        self._bucket = Bucket(js, BUDGETS_BUCKET)
        self._tally: Tally[State] = Tally(js, self._bucket, depth=TALLY_DEPTH, witness=witness)
        self.signed = False
        """Whether the board is signed (its board sets this when it reads its tasks stream)."""

    async def ensure(self, *, signed: bool = False) -> None:
        """Create the bucket unless it exists; a ``signed`` board's keeps the chain readers judge."""
        await self._tally.ensure(replicas=self._replicas, signed=signed)

    async def open(self, budget: Budget, signer: Identity | None = None) -> Budget:
        """Create ``budget``, or accept the one stored under its id when its limits are the same (a
        submission made again); ``InvalidTask`` when they differ. Garbage under its key (no honest
        writer makes it) is replaced. With ``signer`` (a signed board's submitter) its limits are
        signed: readers then refuse limits anyone else wrote (``forged``)."""
        if signer is not None:
            owned = budget.model_copy(update={"owner_key": signer.public_key})
            budget = owned.model_copy(update={"sig": signer.sign(owned.limits_bytes())})
        while True:
            stored, last = await self._read(budget.id)
            if isinstance(stored, str):
                raise CorruptEntry(stored)
            if stored is not None:
                if (stored.tokens, stored.cost) != (budget.tokens, budget.cost):
                    raise InvalidTask(
                        f"budget {budget.id!r} exists with other limits "
                        f"(tokens={stored.tokens}, cost={stored.cost}): give this one another id"
                    )
                return stored
            try:
                await self._write(budget, last, signer)
            except Conflict:
                continue  # someone wrote it meanwhile: look again
            log.info("budget.opened", budget=budget.id, tokens=budget.tokens, cost=budget.cost)
            return budget

    async def get(self, budget_id: str) -> Budget | None:
        """The budget ``budget_id`` (None if there is none, or it does not validate); on a signed
        board its last legal revision (``CorruptEntry`` when its history was erased)."""
        state, _ = await self._read(budget_id)
        if isinstance(state, str):
            raise CorruptEntry(state)
        return state

    async def spent_for(self, record: TaskRecord, *, signed: bool) -> str | None:
        """Why the budget ``record``'s task is charged to lets nothing more be spent (spent, or on
        a ``signed`` board not its owner's, or its history erased), or None (no budget, or one
        with something left)."""
        if record.task.budget is None:
            return None
        budget, _ = await self._read(record.task.budget, signed=signed)
        if budget is None or isinstance(budget, str):
            return budget
        return (forged(budget, record.owner_key) if signed else None) or budget.exhausted_because

    async def charge(
        self, budget_id: str, usage: Usage, key: str, signer: Identity | None = None
    ) -> Budget | None:
        """Add ``usage`` to what ``budget_id`` has spent, once per ``key`` (the attempt's: a retried
        ending charges nothing again), signed by ``signer`` on a signed board; None if there is no
        such budget (or nothing may be spent of it)."""
        if self.signed and signer is None:
            log.warning(
                "budget.unsigned_charge", budget=budget_id, why="a signed board needs the agent's key"
            )
            return None
        while True:
            budget, last = await self._read(budget_id)
            if budget is None or isinstance(budget, str):
                log.warning("budget.missing", budget=budget_id, why=budget)
                return None
            if key in budget.charged:
                return budget
            charged = (*budget.charged[-(CHARGES_KEPT - 1) :], key)
            spent = budget.model_copy(update={"spent": budget.spent + usage, "charged": charged})
            try:
                await self._write(spent, last, signer)
            except Conflict:
                continue
            if spent.exhausted_because and not budget.exhausted_because:
                log.info("budget.spent", budget=budget_id, reason=spent.exhausted_because)
            return spent

    async def forged_at(self, budget_id: str, revision: int) -> Forged | None:
        """The forgery at ``revision`` of ``budget_id`` on a signed board, judged afresh (None:
        that revision is legal, or no longer kept)."""
        return await self._tally.forged_at(budget_id, revision, Spending(budget_id))

    async def _read(self, budget_id: str, *, signed: bool | None = None) -> tuple[State, int]:
        """The budget (on a signed board: its last legal state, restored over forged revisions)
        and the revision a write goes over."""
        judged = self.signed if signed is None else signed
        return await self._tally.current(budget_id, Spending(budget_id), judged=judged)

    async def _write(self, budget: Budget, last: int, signer: Identity | None) -> None:
        value = wire_bytes(budget)
        await self._tally.write(budget.id, budget, value, last=last, signer=signer, signed=self.signed)


class Spending(Rules[State]):
    """The rules of a signed budget's chain: its owner creates it, signing its limits; anyone
    charges it, signed, never lowering what was spent nor changing the limits; only its owner
    deletes it."""

    def __init__(self, budget_id: str) -> None:
        self._id = budget_id

    def creation(self) -> State:
        return None

    def erased(self, link: Link) -> State:
        return (
            f"budget {self._id!r} counts as spent: its history is gone (erased, or flooded past what is kept)"
        )

    def adopted(self, link: Link) -> State:
        return None if link.deleted else _parse(self._id, link.payload)

    def step(self, before: State, after: Link) -> State | str:
        if isinstance(before, str):
            return before  # erased: nothing written later makes it spendable again
        budget = None if after.deleted else _parse(self._id, after.payload)
        if budget == before:
            return budget  # changes nothing (a legal revision written back, or none over none)
        if before is None:
            if budget is None or budget.owner_key is None or after.signer != budget.owner_key:
                return "creates a budget without its owner's signature"
            if forged(budget, budget.owner_key) or budget.spent or budget.charged:
                return "creates a budget with unsigned limits, or already spent"
            return budget
        if after.deleted:
            return None if after.signer == before.owner_key else "deletes a budget, not its owner"
        if budget is None:
            return "not a budget"
        if after.signer is None:
            return "unsigned"
        if budget.limits_bytes() != before.limits_bytes() or (budget.sig, budget.created_at) != (
            before.sig,
            before.created_at,
        ):
            return "changes the budget's limits or owner"
        was, now = before.spent, budget.spent
        if now.tokens_in < was.tokens_in or now.tokens_out < was.tokens_out or now.cost < was.cost:
            return "lowers what was spent"
        return budget

    def floor(self, state: State, known: State) -> State:
        if not isinstance(state, Budget) or not isinstance(known, Budget):
            return known if isinstance(known, str) else state
        was, now = known.spent, state.spent
        most = Usage(
            tokens_in=max(was.tokens_in, now.tokens_in),
            tokens_out=max(was.tokens_out, now.tokens_out),
            cost=max(was.cost, now.cost),
        )
        return state.model_copy(update={"spent": most})


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
