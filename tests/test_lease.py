"""The pure record rules of a claim (``board/lease.py``), without a server: whether a record still
belongs to a lease, what a claim and an expiry make of a record, and the attempt a holder ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ants_nats import Lease, NotTaken, Taken, Task, TaskRecord, TaskStatus, Usage
from ants_nats.board.lease import attempt_of, claim_facts, claimed, expire, holds

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pending(**changes: object) -> TaskRecord:
    record = TaskRecord(
        task=Task(id="t1", kind="work", requires=("llm",), max_attempts=2), status=TaskStatus.PENDING
    )
    return record.model_copy(update={"token": 7, **changes})


def lease_on(record: TaskRecord, *, token: int = 7, agent: str = "ant", claimed: bool = True) -> Lease:
    return Lease(
        task=record.task,
        token=token,
        agent_id=agent,
        ttl=30.0,
        expires_at=NOW + timedelta(seconds=30),
        _record=record,
        _revision=token,
        claimed=claimed,
        started_at=NOW,
    )


def test_a_claimed_record_belongs_to_the_lease_with_its_token_and_holder() -> None:
    record = claimed(pending(), "ant", token=9, now=NOW, ticket=None)
    assert holds(lease_on(record, token=9), record)
    assert not holds(lease_on(record, token=8), record)  # an older claim of the same task
    assert not holds(lease_on(record, token=9, agent="other"), record)


def test_a_deferred_claim_holds_until_anyone_claims_since_the_record_it_started_from() -> None:
    start = pending()
    deferred = lease_on(start, token=12, claimed=False)
    assert holds(deferred, start)  # nothing written yet: the record still reads pending
    assert holds(deferred, start.model_copy(update={"updated_at": NOW}))  # a change that is no claim
    other = claimed(start, "other", token=13, now=NOW, ticket=None)
    assert not holds(deferred, other)
    assert not holds(deferred, other.model_copy(update={"status": TaskStatus.PENDING, "holder": None}))
    assert not holds(deferred, start.model_copy(update={"status": TaskStatus.DONE}))
    assert not holds(deferred, start.model_copy(update={"waiting_on": ("dep",)}))  # not ready
    # A deferred claim whose write landed (its writer cancelled meanwhile) is still its own.
    assert holds(deferred, claimed(start, "ant", token=12, now=NOW, ticket=3))


def test_a_claim_names_its_holder_token_and_ticket_and_ends_unroutable() -> None:
    record = pending(unroutable=("gpu",), unroutable_reason="nobody announces gpu")
    after = claimed(record, "ant", token=9, now=NOW, ticket=42)
    assert after.status is TaskStatus.CLAIMED
    assert (after.holder, after.token, after.ticket, after.claimed_at) == ("ant", 9, 42, NOW)
    assert after.unroutable is None and after.unroutable_reason is None
    assert after.task == record.task and after.attempts == ()


def test_an_expired_lease_counts_an_attempt_and_the_last_one_kills_the_task() -> None:
    first = claimed(pending(), "ant", token=9, now=NOW - timedelta(minutes=1), ticket=42)
    back, attempt = expire(first, NOW)
    assert (attempt.agent, attempt.token, attempt.outcome) == ("ant", 9, "expired")
    assert (attempt.started_at, attempt.ended_at) == (NOW - timedelta(minutes=1), NOW)
    assert back.status is TaskStatus.PENDING and back.holder is None and back.ticket is None
    assert back.attempts == (attempt,) and back.counted_attempts == 1
    dead, _ = expire(claimed(back, "ant", token=11, now=NOW, ticket=43), NOW)
    assert dead.status is TaskStatus.DEAD  # max_attempts=2, both spent
    assert dead.error == "gave up after 2 attempts (max_attempts=2)"


def test_attempts_not_counted_leave_the_budget_of_attempts_alone() -> None:
    released = attempt_of(lease_on(pending()), "released", NOW)
    record = pending(attempts=(released, released))
    back, _ = expire(claimed(record, "ant", token=9, now=NOW, ticket=None), NOW)
    assert back.status is TaskStatus.PENDING and back.counted_attempts == 1


def test_the_attempt_a_holder_ends_and_what_its_event_says() -> None:
    record = pending()
    spent = Usage(tokens_in=3, cost=0.5)
    attempt = attempt_of(lease_on(record, token=9), "failed", NOW + timedelta(seconds=5), "boom", spent)
    assert (attempt.agent, attempt.token, attempt.outcome, attempt.error) == ("ant", 9, "failed", "boom")
    assert (attempt.started_at, attempt.ended_at, attempt.usage) == (NOW, NOW + timedelta(seconds=5), spent)
    assert attempt.counted
    assert claim_facts(lease_on(record), record) == {"kind": "work", "requires": ["llm"]}
    assert claim_facts(lease_on(record, claimed=False), record) == {
        "kind": "work",
        "requires": ["llm"],
        "deferred": True,
    }


def test_taken_is_the_old_name_of_not_taken() -> None:
    assert Taken is NotTaken
    assert NotTaken("t1", "unknown") == Taken("t1", "unknown")
