"""The rules of a signed board's counters: what a step of a budget (``Spending``) and of a rate
window (``Taking``) may change, judged as every reader judges them."""

from __future__ import annotations

import math
from datetime import timedelta

from ants_nats import Budget, Identity, Limit, Usage
from ants_nats.board.budget import Spending, State
from ants_nats.board.chain import Link
from ants_nats.board.rates import SLOTS, Taking
from ants_nats.models import RateSlot, RateWindow, utcnow, wire_bytes

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
