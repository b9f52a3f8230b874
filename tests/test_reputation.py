"""Reputation math and the ledger fold: pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ants_nats.ledger import apply
from ants_nats.models import AgentLedger, Score, TrailEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600.0


def test_score_starts_neutral_and_moves_with_evidence() -> None:
    assert Score().value(T0, HOUR) == 0.5
    good = Score().add(3, 0, T0, HOUR)
    bad = Score().add(0, 2, T0, HOUR)
    assert good.value(T0, HOUR) == pytest.approx(4 / 5)
    assert bad.value(T0, HOUR) == pytest.approx(1 / 4)


def test_evidence_is_forgotten_with_its_half_life() -> None:
    bad = Score().add(0, 4, T0, HOUR)
    later = bad.decayed(T0 + timedelta(hours=2), HOUR)
    assert later.bad == pytest.approx(1.0)
    assert bad.value(T0 + timedelta(hours=100), HOUR) == pytest.approx(0.5, abs=1e-6)
    # New evidence is added on top of the decayed old evidence.
    mixed = bad.add(1, 0, T0 + timedelta(hours=1), HOUR)
    assert (mixed.good, mixed.bad) == (pytest.approx(1.0), pytest.approx(2.0))


def event(kind: str, seq: int, agent: str = "a", requires: tuple[str, ...] = ("llm",)) -> TrailEvent:
    return TrailEvent(kind=kind, ref="t", agent=agent, seq=seq, at=T0, data={"requires": list(requires)})


def test_ledger_fold_counts_scores_per_capability_and_skips_replays() -> None:
    ledger = AgentLedger(agent="a")
    for seq, kind in enumerate(["task.claimed", "task.completed", "task.claimed", "task.expired"], 1):
        folded = apply(ledger, event(kind, seq), half_life=HOUR)
        assert folded is not None
        ledger = folded
    assert apply(ledger, event("task.completed", 3), half_life=HOUR) is None  # seen already
    assert ledger.totals.completed == 1 and ledger.totals.expired == 1
    assert ledger.scores["llm"].value(T0, HOUR) == pytest.approx(0.5)
    bad = TrailEvent(kind="mark.result.bad", ref="t", agent="checker", seq=9, at=T0, data={"agent": "a"})
    folded = apply(ledger, bad, half_life=HOUR)
    assert folded is not None and folded.totals.bad_result == 1
    assert folded.scores["any"].value(T0, HOUR) == pytest.approx(1 / 4)
