"""The rules of a signed board's counters: what a step of a budget (``Spending``) and of a rate
window (``Taking``) may change, judged as every reader judges them."""

from __future__ import annotations

import math
from datetime import timedelta

from ants_nats import BoardConfig, Budget, EmbeddedServer, Identity, Limit, Task, TaskBoard, Usage, connect
from ants_nats._store import Bucket, ensure_kv
from ants_nats.board.budget import Spending, State
from ants_nats.board.chain import Link
from ants_nats.board.rates import SLOTS, Taking
from ants_nats.models import RateSlot, RateWindow, utcnow, wire_bytes
from ants_nats.names import BUDGETS_BUCKET, FORGED_RECORD

OWNER, ANT = Identity.generate(), Identity.generate()
NOW = utcnow()


def link(value: Budget | RateWindow | None, signer: Identity | None, *, seconds: float = 0.0) -> Link:
    """A revision written by ``signer`` (None: unsigned) ``seconds`` after NOW (None: a deletion)."""
    payload = b"" if value is None else wire_bytes(value)
    key = signer.public_key if signer is not None else None
    return Link(7, payload, {}, key, 6, False, value is None, NOW + timedelta(seconds=seconds))


_OWNED = Budget(id="b", tokens=100).model_copy(update={"owner_key": OWNER.public_key})
OPENED = _OWNED.model_copy(update={"sig": OWNER.sign(_OWNED.limits_bytes())})


def opened(**update: object) -> Budget:
    if "id" in update:  # (its limits signed under that id)
        owned = _OWNED.model_copy(update={"id": update["id"]})
        return owned.model_copy(update={"sig": OWNER.sign(owned.limits_bytes()), **update})
    return OPENED.model_copy(update=update)


def budget_step(before: State, after: Budget | None, signer: Identity | None) -> State | str:
    return Spending("b").step(before, link(after, signer))


def test_only_its_owner_creates_a_budget_and_only_unspent() -> None:
    assert budget_step(None, opened(), OWNER) == opened()
    assert isinstance(budget_step(None, opened(), ANT), str)
    assert isinstance(budget_step(None, opened(spent=Usage(tokens_in=1)), OWNER), str)
    assert isinstance(budget_step(None, opened(tokens=10**9), OWNER), str)  # limits it did not sign


def test_anyone_signed_charges_a_budget_but_nobody_lowers_or_relimits_it() -> None:
    spent = opened(spent=Usage(tokens_in=5), charged=("t.1.completed",))
    more = spent.model_copy(update={"spent": Usage(tokens_in=5, tokens_out=2), "charged": ("x", "y")})
    assert budget_step(spent, more, ANT) == more
    assert budget_step(spent, opened(), ANT) == "lowers what was spent"
    assert budget_step(spent, opened(), OWNER) == "lowers what was spent"
    assert budget_step(spent, more, None) == "unsigned"
    assert (
        budget_step(spent, more.model_copy(update={"tokens": 10**9}), ANT)
        == "changes the budget's limits or owner"
    )
    assert budget_step(spent, spent, None) == spent  # a legal revision written back changes nothing
    assert budget_step(spent, None, ANT) == "deletes a budget, not its owner"
    assert budget_step(spent, None, OWNER) is None
    assert budget_step(None, None, None) is None  # a deletion over nothing changes nothing
    erased = Spending("b").erased(link(None, None))
    assert isinstance(erased, str) and budget_step(erased, opened(), OWNER) == erased


LIMIT = Limit(capability="llm", requests=10, per=60)
LENGTH = LIMIT.per / SLOTS
NOW_SLOT = math.floor(NOW.timestamp() / LENGTH)


def window(*slots: tuple[int, int, int]) -> RateWindow:
    return RateWindow(slots=tuple(RateSlot(n=NOW_SLOT + n, requests=r, tokens=t) for n, r, t in slots))


def window_step(
    before: RateWindow, after: RateWindow | None, signer: Identity | None, seconds: float = 0.0
) -> RateWindow | str:
    return Taking(LIMIT).step(before, link(after, signer, seconds=seconds))


def test_anyone_signed_takes_from_a_window_but_nobody_gives_back_what_is_still_inside_it() -> None:
    before = window((-3, 2, 0), (0, 1, 10))
    taken = window((-3, 2, 0), (0, 2, 10))
    assert window_step(before, taken, ANT) == taken
    assert (
        window_step(before, window((-3, 2, 0), (0, 1, 0)), ANT)
        == f"lowers what was taken in slot {NOW_SLOT} of the window"
    )
    assert isinstance(window_step(before, window((0, 2, 10)), ANT), str)  # a live slot dropped
    assert window_step(before, taken, None) == "unsigned"
    assert window_step(before, None, ANT) == "deletes a rate window"
    assert window_step(before, before, None) == before
    # A slot older than the interval (by the server's clock, past the clock skew) may go.
    old = window((-(SLOTS + 3), 5, 0), (0, 1, 0))
    assert window_step(old, window((0, 2, 0)), ANT) == window((0, 2, 0))
    assert isinstance(window_step(window((-(SLOTS - 3), 5, 0)), window(), ANT), str)


def test_an_erased_window_is_full_for_an_interval() -> None:
    full = Taking(LIMIT).erased(link(None, None))
    assert full == window((0, LIMIT.requests or 0, 0))
    # An honest writer judging from it keeps that slot while it lasts, then lets it go.
    assert window_step(full, window((0, 10, 0), (1, 1, 0)), ANT, seconds=LENGTH) == window(
        (0, 10, 0), (1, 1, 0)
    )
    later = LIMIT.per + 2 * LENGTH + 5
    assert window_step(full, window((SLOTS + 3, 1, 0)), ANT, seconds=later) == window((SLOTS + 3, 1, 0))


async def test_a_board_made_before_budgets_were_chains_reads_them_as_they_stand() -> None:
    # Its budgets bucket keeps one revision a key, written unsigned: a signed board opened on it
    # later (which raises what the bucket keeps) must not take those revisions for forgeries.
    async with EmbeddedServer() as server, connect(server.url) as nc:
        js = nc.jetstream()
        await ensure_kv(js, BUDGETS_BUCKET, replicas=1, history=1)
        budgets = Bucket(js, BUDGETS_BUCKET)
        revision = await budgets.create("old", wire_bytes(opened(id="old")))
        charged = opened(id="old", spent=Usage(tokens_in=7), charged=("t.1.completed",))
        await budgets.update("old", wire_bytes(charged), last=revision)
        async with TaskBoard.connect(server.url, BoardConfig(signed=True)) as board:
            board.sign_as("owner", OWNER)
            assert (await board.budget("old")).spent.tokens == 7
            await board.submit(Task(id="t2", kind="later", budget="old", created_by="owner"))
            assert await board.trail.last(FORGED_RECORD, "old") is None


def test_a_window_read_past_a_flood_keeps_what_its_reader_knew() -> None:
    known = window((-1, 2, 0), (0, 3, 5))
    assert Taking(LIMIT).floor(window((0, 1, 9), (1, 1, 0)), known) == window(
        (-1, 2, 0), (0, 3, 9), (1, 1, 0)
    )
