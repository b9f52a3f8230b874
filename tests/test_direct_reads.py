"""Direct gets of task records: a compare-and-set may start from one (any replica answers it, perhaps
behind), and decides nothing on it that a fresh read from the leader would not."""

from __future__ import annotations

import pytest

from ants_nats import Lease, Task, TaskBoard, TaskStatus
from ants_nats._store import Entry


async def test_the_tasks_bucket_answers_direct_gets_with_the_record(board: TaskBoard) -> None:
    await board.submit(Task(id="t1", kind="work", requires=("fetch",)))
    guessed = await board._core.tasks.guess("t1")
    stored = await board._core.tasks.get("t1")
    assert guessed is not None and stored is not None
    assert (guessed.value, guessed.revision) == (stored.value, stored.revision)


async def test_a_change_refused_on_a_replicas_older_copy_is_decided_on_a_fresh_read(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await board.submit(Task(id="t1", kind="work", requires=("fetch",), max_attempts=1))
    created = await board._core.tasks.get("t1")
    lease = await board.claim("t1", "w1")
    assert isinstance(lease, Lease) and created is not None
    assert (await board.fail(lease, "boom", retry=False)).status is TaskStatus.FAILED

    async def behind(key: str) -> Entry | None:
        return created  # a replica that has not seen the claim nor the failure yet

    monkeypatch.setattr(board._core.tasks, "guess", behind)
    # On the old copy the task is pending, which cannot be retried; the leader knows it failed.
    assert (await board.retry("t1")).status is TaskStatus.PENDING
