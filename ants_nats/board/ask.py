"""Asking for input: a handler's question parks its task until someone answers.

``ask`` ends the holder's claim like a release (not an attempt), with the task ``waiting_input``
and the question in its record; the holder hands its ticket back to the server with the question's
timeout as the delay, so the ticket itself is the timer (no process of ours waits). ``answer``
stores the answer and announces the task afresh; the agent that claims it replays the handler,
whose ``ask`` now returns the stored answer. A ticket that comes back while the task still waits
after the timeout fails it with the reason (``Claims``); one that comes back early is held again.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import JsonValue

from ..errors import InvalidTask, NotWaiting, TaskFinished
from ..models import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, Question, TaskRecord, TaskStatus, Usage, utcnow
from ._core import Core, check_id
from .lease import Lease, claim_facts
from .propagate import Propagation
from .settle import Settlement, spent


class Asking:
    """Questions and answers on one board's tasks."""

    def __init__(self, core: Core, settlement: Settlement, propagation: Propagation) -> None:
        self._core = core
        self._settlement = settlement
        self._propagation = propagation

    async def ask(
        self, lease: Lease, question: str, *, timeout: float, usage: Usage | None = None
    ) -> TaskRecord:
        """See ``TaskBoard.ask``."""
        if not isinstance(question, str) or not question.strip() or len(question) > MAX_QUESTION_CHARS:
            raise InvalidTask(f"a question is 1 to {MAX_QUESTION_CHARS} characters of text")
        if not 0 < timeout <= 30 * 86400:
            raise InvalidTask(f"a question's timeout is more than 0 and at most 30 days, got {timeout}")
        now = utcnow()
        asked = Question(
            text=question, asked_by=lease.agent_id, asked_at=now, until=now + timedelta(seconds=timeout)
        )

        def waiting(record: TaskRecord) -> dict[str, object]:
            return {"status": TaskStatus.WAITING_INPUT, "questions": (*record.questions, asked)}

        final = await self._settlement.end(lease, "asked", waiting, error=f"asked: {question}", usage=usage)
        data: dict[str, JsonValue] = {
            **claim_facts(lease, final),
            "question": question,
            "until": asked.until.isoformat(),
        }
        await self._core.event(
            "task.asked", lease.task_id, agent=lease.agent_id, token=lease.token, data=spent(data, usage)
        )
        return final

    async def answer(
        self, task_id: str, text: str, *, question: int | None = None, by: str | None = None
    ) -> TaskRecord:
        """See ``TaskBoard.answer``."""
        check_id(task_id)
        if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
            raise InvalidTask(f"an answer is text of at most {MAX_ANSWER_CHARS} characters")
        now = utcnow()

        def answered(record: TaskRecord) -> TaskRecord:
            if record.status.terminal:
                raise TaskFinished(f"task {task_id!r} is already {record.status.value}: it takes no answer")
            if record.status is not TaskStatus.WAITING_INPUT or not record.questions:
                raise NotWaiting(f"task {task_id!r} is {record.status.value}, not waiting for input")
            asked = len(record.questions) - 1
            if question is not None and question != asked:
                raise NotWaiting(
                    f"task {task_id!r} waits for an answer to question {asked} "
                    f"({record.questions[-1].text!r}), not question {question}"
                )
            given = record.questions[-1].model_copy(
                update={"answer": text, "answered_by": by, "answered_at": now}
            )
            return record.model_copy(
                update={
                    "status": TaskStatus.PENDING,
                    "error": None,
                    "questions": (*record.questions[:-1], given),
                }
            )

        final, revision = await self._core.mutate(task_id, answered, by=by)
        if final.ready:
            # A fresh ticket (first: without it the task would wait for the question's timer, the
            # first ticket, which the server still holds).
            await self._propagation.announce(final, revision, again=True)
        await self._core.event("task.answered", task_id, data={"by": by}, by=by)
        return final
