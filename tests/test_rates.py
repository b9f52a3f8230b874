"""The rate window's pure rules (``board/rates.py``), without a server: which slots count, when a
request may be reserved (or how long until it may), refunds, and charged tokens."""

from __future__ import annotations

from ants_nats import Limit
from ants_nats.board.rates import SLOTS, added, live_slots, refunded, reserved
from ants_nats.models import RateSlot, RateWindow

NOW_SLOT = 1_000


def test_only_the_last_interval_counts_and_a_slot_far_ahead_is_dropped() -> None:
    window = RateWindow(
        slots=tuple(
            RateSlot(n=n, requests=1)
            for n in (
                NOW_SLOT - SLOTS - 1,
                NOW_SLOT - SLOTS,
                NOW_SLOT,
                NOW_SLOT + SLOTS,
                NOW_SLOT + SLOTS + 1,
            )
        )
    )
    assert [s.n for s in live_slots(window, NOW_SLOT)] == [NOW_SLOT - SLOTS, NOW_SLOT, NOW_SLOT + SLOTS]
    assert live_slots(None, NOW_SLOT) == []  # no window written yet


def test_a_request_is_reserved_in_the_current_slot_while_there_is_room() -> None:
    limit = Limit(capability="llm", requests=3)
    first = reserved(limit, [], NOW_SLOT)
    assert first == [RateSlot(n=NOW_SLOT, requests=1)]
    assert isinstance(first, list)
    second = reserved(limit, [RateSlot(n=NOW_SLOT - 4, requests=1), *first], NOW_SLOT)
    assert second == [RateSlot(n=NOW_SLOT - 4, requests=1), RateSlot(n=NOW_SLOT, requests=2)]


def test_a_full_window_says_how_many_slots_until_the_oldest_request_leaves() -> None:
    limit = Limit(capability="llm", requests=2)
    full = [RateSlot(n=NOW_SLOT - SLOTS + 3, requests=1), RateSlot(n=NOW_SLOT - 1, requests=1)]
    # The oldest request's slot leaves once slot (its slot + SLOTS + 1) begins: 4 slots from now.
    assert reserved(limit, full, NOW_SLOT) == 4.0
    # Counting one slot more than the interval spans: a request in the oldest slot still counts.
    assert reserved(limit, [RateSlot(n=NOW_SLOT - SLOTS, requests=2)], NOW_SLOT) == 1.0


def test_reported_tokens_fill_a_token_limit_until_they_slide_out() -> None:
    limit = Limit(capability="llm", tokens=100)
    assert isinstance(reserved(limit, [RateSlot(n=NOW_SLOT - 2, tokens=99)], NOW_SLOT), list)
    overshot = [RateSlot(n=NOW_SLOT - 2, requests=1, tokens=150)]  # charged after the work
    assert reserved(limit, overshot, NOW_SLOT) == float(SLOTS - 1)


def test_a_limit_of_zero_asks_again_an_interval_later() -> None:
    assert reserved(Limit(capability="llm", requests=0), [], NOW_SLOT) == float(SLOTS + 1)


def test_no_interval_ever_holds_more_than_the_limit() -> None:
    most = 7
    limit = Limit(capability="llm", requests=most)
    window: list[RateSlot] = []
    total = 0
    for slot in range(NOW_SLOT, NOW_SLOT + 5 * SLOTS):
        window = [s for s in window if s.n >= slot - SLOTS]
        while isinstance(more := reserved(limit, window, slot), list):
            window, total = more, total + 1
        taken = {s.n: s.requests for s in window}
        assert sum(taken.get(n, 0) for n in range(slot - SLOTS + 1, slot + 1)) <= most
    assert total >= 4 * most  # and the limit is used: about one full interval in every SLOTS + 1


def test_a_refund_gives_back_one_request_of_its_slot() -> None:
    window = [RateSlot(n=NOW_SLOT - 1, requests=2, tokens=5), RateSlot(n=NOW_SLOT, requests=1)]
    assert refunded(window, NOW_SLOT - 1) == [RateSlot(n=NOW_SLOT - 1, requests=1, tokens=5), window[1]]
    # Its slot has left the window, or holds no request: nothing to write.
    assert refunded(window, NOW_SLOT - 7) == 0.0
    assert refunded([RateSlot(n=NOW_SLOT, tokens=3)], NOW_SLOT) == 0.0


def test_charged_tokens_add_to_the_current_slot() -> None:
    window = [RateSlot(n=NOW_SLOT - 3, requests=1), RateSlot(n=NOW_SLOT, requests=1, tokens=2)]
    assert added(window, NOW_SLOT, tokens=40) == [window[0], RateSlot(n=NOW_SLOT, requests=1, tokens=42)]
    assert added(window[:1], NOW_SLOT, tokens=40) == [window[0], RateSlot(n=NOW_SLOT, tokens=40)]
