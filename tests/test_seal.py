"""The rules of a signed board (``board.seal.judge``): who may make which change to a task record."""

from __future__ import annotations

from datetime import timedelta

from ants_nats import Identity, Task, TaskStatus
from ants_nats.board.seal import judge
from ants_nats.models import Attempt, DeclineNote, Question, TaskRecord, utcnow

OWNER, ANT, OTHER = Identity.generate(), Identity.generate(), Identity.generate()
NOW = utcnow()


def created(**update: object) -> TaskRecord:
    task = Task(id="t1", kind="echo", created_by="owner")
    return TaskRecord(task=task, status=TaskStatus.PENDING, owner_key=OWNER.public_key).model_copy(
        update=update
    )


def claimed_by(key: Identity, token: int = 7) -> TaskRecord:
    return created(status=TaskStatus.CLAIMED, holder="ant", holder_key=key.public_key, token=token)


def attempt(key: Identity, outcome: str = "completed", token: int = 7, agent: str = "ant") -> Attempt:
    return Attempt.model_validate(
        {"agent": agent, "token": token, "started_at": NOW, "ended_at": NOW, "outcome": outcome}
    ).model_copy(update={"key": key.public_key})


def done_by(key: Identity, token: int = 7, result: str = "ok") -> TaskRecord:
    return created(status=TaskStatus.DONE, token=token, result=result, attempts=(attempt(key, token=token),))


def legal(
    before: TaskRecord | None, after: TaskRecord | None, signer: Identity | None, prev: int = 7
) -> bool:
    key = signer.public_key if signer is not None else None
    return judge(before, after, key, prev=prev, now=NOW).illegal is None


def test_only_its_owner_creates_deletes_and_cancels_a_task() -> None:
    assert legal(None, created(), OWNER)
    assert not legal(None, created(), ANT)
    assert not legal(None, created(), None)
    assert not legal(None, done_by(OWNER), OWNER)  # born finished
    cancelled = created(status=TaskStatus.CANCELLED, error="no")
    assert legal(created(), cancelled, OWNER)
    assert not legal(created(), cancelled, ANT)
    assert legal(created(), None, OWNER)
    assert not legal(created(), None, ANT)


def test_nobody_changes_a_tasks_definition_or_owner() -> None:
    other_task = created().model_copy(update={"task": Task(id="t1", kind="rm-rf", created_by="owner")})
    assert not legal(created(), other_task, ANT)
    assert not legal(created(), created(owner_key=ANT.public_key), ANT)
    assert not legal(created(), created(owner_key=ANT.public_key), OWNER)


def test_a_claim_is_for_the_signer_itself_fenced_by_the_revision_it_read() -> None:
    assert legal(created(), claimed_by(ANT, token=7), ANT, prev=7)
    assert not legal(created(), claimed_by(OTHER, token=7), ANT, prev=7)  # for another
    # A token read since the last claim: a claim retried after someone's bookkeeping keeps its own.
    assert legal(created(), claimed_by(ANT, token=5), ANT, prev=7)
    assert not legal(created(token=6), claimed_by(ANT, token=6), ANT, prev=7)  # no newer than the last
    assert not legal(created(), claimed_by(ANT, token=8), ANT, prev=7)  # from the future
    assert not legal(created(waiting_on=("dep",)), claimed_by(ANT, token=7), ANT, prev=7)  # not ready
    assert not legal(done_by(OTHER), claimed_by(ANT, token=7), ANT, prev=7)  # finished


def test_only_the_holder_settles_and_a_deferred_outcome_is_the_signers_own() -> None:
    assert legal(claimed_by(ANT), done_by(ANT), ANT, prev=9)
    assert not legal(claimed_by(ANT), done_by(OTHER), OTHER, prev=9)
    # Claim and outcome in one write: its attempt signed by the writer, with the revision read.
    assert legal(created(), done_by(ANT, token=7), ANT, prev=7)
    assert not legal(created(), done_by(ANT, token=7), OTHER, prev=7)
    assert legal(created(), done_by(ANT, token=5), ANT, prev=7)  # read before someone's bookkeeping
    assert not legal(created(), done_by(ANT, token=9), ANT, prev=7)  # a revision not yet written


def test_anyone_may_end_a_lapsed_claim_with_the_holders_own_attempt() -> None:
    expired = attempt(ANT, "expired")
    returned = created(token=7, attempts=(expired,))
    assert legal(claimed_by(ANT), returned, OTHER, prev=8)
    forged_blame = created(token=7, attempts=(attempt(ANT, "failed"),))
    assert not legal(claimed_by(ANT), forged_blame, OTHER, prev=8)
    # Expired and claimed afresh in one write.
    retaken = claimed_by(OTHER, token=8).model_copy(update={"attempts": (expired,)})
    assert legal(claimed_by(ANT), retaken, OTHER, prev=8)


def test_past_attempts_and_others_decline_notes_are_nobodys_to_rewrite() -> None:
    history = done_by(ANT).model_copy(update={"status": TaskStatus.PENDING})
    rewritten = history.model_copy(update={"attempts": (attempt(ANT, "failed"),)})
    assert not legal(history, rewritten, OTHER)
    note = DeclineNote(agent="ant", count=1, reason="no", at=NOW, offer="x", token=7, key=ANT.public_key)
    assert legal(created(), created(declines=(note,), token=7), ANT, prev=7)
    assert not legal(created(), created(declines=(note,), token=7), OTHER, prev=7)


def test_a_dependency_leaves_waiting_on_only_once_done() -> None:
    verdict = judge(
        created(waiting_on=("a", "b")), created(waiting_on=("b",)), ANT.public_key, prev=7, now=NOW
    )
    assert verdict.illegal is None and verdict.done == ("a",)
    adds = judge(created(), created(waiting_on=("x",)), ANT.public_key, prev=7, now=NOW)
    assert adds.illegal is not None


def test_anyone_may_answer_an_open_question_signed_or_not() -> None:
    question = Question(text="which?", asked_by="ant", asked_at=NOW, until=NOW + timedelta(hours=1))
    waiting = created(status=TaskStatus.WAITING_INPUT, questions=(question,))
    answer = question.model_copy(update={"answer": "this", "answered_by": "human", "answered_at": NOW})
    answered = created(questions=(answer,))
    assert legal(waiting, answered, None)
    assert legal(waiting, answered, OTHER)
    # An answer that also finishes the task is no answer.
    assert not legal(waiting, answered.model_copy(update={"status": TaskStatus.DONE}), None)


def test_failing_an_unclaimed_task_needs_a_reason_a_reader_can_check() -> None:
    failed = created(status=TaskStatus.FAILED, error="deadline passed")
    assert not legal(created(), failed, ANT)
    past = Task(id="t1", kind="echo", created_by="owner", deadline=NOW - timedelta(seconds=1))
    assert legal(created(task=past), failed.model_copy(update={"task": past}), ANT)
    blocked = judge(
        created(waiting_on=("dep",)),
        created(waiting_on=("dep",), status=TaskStatus.FAILED, error="dep failed"),
        ANT.public_key,
        prev=7,
        now=NOW,
    )
    assert blocked.illegal is None and blocked.ended_badly == ("dep",)


def test_writing_back_the_same_state_is_always_legal() -> None:
    assert legal(done_by(ANT), done_by(ANT), OTHER)


def test_an_ending_says_what_its_attempt_says() -> None:
    # The holder may not complete without a completed attempt, nor cancel, nor fail with a result.
    failed = done_by(ANT).model_copy(update={"attempts": (attempt(ANT, "failed"),)})
    assert not legal(claimed_by(ANT), failed, ANT, prev=9)
    cancelled = created(status=TaskStatus.CANCELLED, token=7, attempts=(attempt(ANT, "released"),))
    assert not legal(claimed_by(ANT), cancelled, ANT, prev=9)
    # A decline note is no licence to change anything else.
    note = DeclineNote(agent="ant", count=1, reason="no", at=NOW, offer="x", token=7, key=ANT.public_key)
    sneaky = created(declines=(note,), token=7, status=TaskStatus.DONE, result="X")
    assert not legal(created(), sneaky, ANT, prev=7)


def test_an_expired_claim_is_dead_only_after_its_last_attempt() -> None:
    expired = attempt(ANT, "expired")
    early = created(token=7, attempts=(expired,), status=TaskStatus.DEAD)
    assert not legal(claimed_by(ANT), early, OTHER, prev=8)  # max_attempts is 3
    last = Task(id="t1", kind="echo", created_by="owner", max_attempts=1)
    ended = early.model_copy(update={"task": last})
    assert legal(claimed_by(ANT).model_copy(update={"task": last}), ended, OTHER, prev=8)


def test_anyone_may_put_back_a_task_blocked_by_a_dependency_checked_by_its_reader() -> None:
    blocked = created(status=TaskStatus.FAILED, error="blocked: dependency 'd' is failed", waiting_on=("d",))
    verdict = judge(blocked, created(waiting_on=("d",)), ANT.public_key, prev=7, now=NOW)
    assert verdict.illegal is None and verdict.revived
    other = created(status=TaskStatus.FAILED, error="deadline passed before a claim")
    assert judge(other, created(), ANT.public_key, prev=7, now=NOW).illegal is not None
