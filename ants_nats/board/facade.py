"""``TaskBoard``: the board's public face. It reads one record itself, hands reads of many to
``read``, and every transition to the module of its family (``submit``, ``claim``, ``settle``;
``propagate`` and ``recover`` work behind them)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import pydantic
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import JsonValue

from .._connect import connect, jetstream
from ..errors import BudgetNotFound, InvalidTask, TaskCancelled, TaskFailed
from ..identity import Identity
from ..models import (
    AgentCard,
    ArtifactRef,
    Budget,
    Limit,
    Schedule,
    Task,
    TaskRecord,
    TaskStatus,
    Ticket,
    Usage,
)
from ._core import Core, check_id
from .ask import Asking
from .cancel import Cancellation
from .claim import Claims
from .config import BoardConfig
from .decline import Declines
from .endings import Endings
from .lease import Lease, NotTaken
from .propagate import Propagation
from .read import Ending, Reading
from .recover import Recovery
from .requeue import Requeue
from .schedule import Schedules
from .settle import Settlement
from .submit import Submission, parse_task


class TaskBoard:
    """The shared task board. Open it with ``TaskBoard.connect(url)`` or ``await TaskBoard.open(nc)``."""

    def __init__(self, nc: Client, config: BoardConfig) -> None:
        core = Core(nc, jetstream(nc), config)
        self._core = core
        self.nc = nc
        self.config = config
        self.tasks = core.tasks
        """The task records (``ants_tasks``)."""
        self.leases = core.leases
        """Lease keys of direct claims (``ants_leases``)."""
        self.routes = core.routes
        """Where tickets of ready tasks are announced."""
        self.trail = core.trail
        """The trail every state change of this board is written to."""
        self.directory = core.directory
        """Live agent cards: who can do what right now."""
        self.reputation = core.reputation
        """Scores read from the ledger; every claim through this board checks them."""
        self.artifacts = core.artifacts
        """Payloads, results and files too big to be inline (Object Store ``ants_artifacts``)."""
        self.rates = core.rates
        """Shared rate limits (``ants_limits``) and what agents took of them (``ants_rates``)."""
        self._reading = Reading(core)
        self._propagation = Propagation(core)
        self._recovery = Recovery(core, self._propagation)
        self._submission = Submission(core, self._propagation)
        self._claims = Claims(core, self._propagation, self._recovery)
        self._settlement = Settlement(core, self._claims, self._propagation)
        self._cancellation = Cancellation(core, self._propagation)
        self._requeue = Requeue(core, self._propagation)
        self._schedules = Schedules(core, self._submission)
        self._declines = Declines(core, self._settlement, self._propagation)
        self._asking = Asking(core, self._settlement, self._propagation)

    @classmethod
    async def open(cls, nc: Client, config: BoardConfig | None = None, *, create: bool = True) -> TaskBoard:
        """Bind to the board on an open connection, creating buckets and streams if missing; a
        reader (``create=False``: read-only credentials suffice) creates nothing, and gets
        ``BoardNotFound`` when no board was ever set up there."""
        board = cls(nc, config or BoardConfig())
        if create:
            await board._core.ensure()
        else:
            await board._core.find()
        return board

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        config: BoardConfig | None = None,
        *,
        name: str = "ants-nats",
        seed: str | None = None,
        create: bool = True,
        js_domain: str | None = None,
    ) -> AsyncGenerator[TaskBoard, None]:
        """Connect to ``url`` (as nkeys user ``seed``, if given), open the board (see ``open``),
        and close the connection on exit. ``js_domain``: the JetStream domain the board lives in,
        when it is not the server's own (an agent on a site's leaf node, the board on the hub)."""
        async with connect(url, name=name, seed=seed, js_domain=js_domain) as nc:
            yield await cls.open(nc, config, create=create)

    def sign_as(self, agent_id: str, identity: Identity) -> None:
        """Sign the events this board lays on behalf of ``agent_id`` with ``identity``."""
        self._core.identities[agent_id] = identity

    # ----------------------------------------------------------------- reading

    async def get(self, task_id: str) -> TaskRecord:
        """The current record of ``task_id``; ``TaskNotFound`` if there is none."""
        check_id(task_id)
        return (await self._core.get_entry(task_id))[0]

    async def all_tasks(self) -> list[TaskRecord]:
        """Every task on the board (one pass over the bucket; corrupt values are logged and skipped)."""
        return await self._reading.all_tasks()

    async def recent(
        self, limit: int = 50, keep: Callable[[TaskRecord], bool] = lambda _: True
    ) -> tuple[list[TaskRecord], int]:
        """The ``limit`` most recently changed tasks that ``keep`` accepts, newest first, and how
        many keys the board holds (a bound on how many more there are). Reads only the latest
        changes (widening the look back until enough match), so it stays fast on a large board."""
        if limit < 1:
            raise InvalidTask("limit must be at least 1")
        return await self._reading.recent(limit, keep)

    def watch(self, task_ids: Iterable[str] | None = None) -> AsyncGenerator[TaskRecord, None]:
        """Every task's current record (or only those of ``task_ids``), then every change as it
        happens (no polling). Watching some tasks costs what they change, not what the board holds."""
        return self._reading.watch(task_ids)

    async def wait(self, task_ids: Iterable[str], timeout: float | None = None) -> dict[str, TaskRecord]:
        """Wait until every task in ``task_ids`` is terminal; ``WaitTimeout`` (a ``TimeoutError``
        naming the tasks unfinished) after ``timeout`` s.
        Only those tasks are watched, so the wait costs the same on a small board as on a big one."""
        return await self._reading.wait(task_ids, timeout)

    def endings(self, tasks: Iterable[str | Task]) -> Endings:
        """A wait for ``tasks`` (tasks, or their ids) to end that hears their ending events,
        listening from the moment it is entered: enter it before submitting (``async with
        board.endings(tasks) as endings``, then ``records = await board.submit_many(tasks)``), then
        ``await endings.wait(timeout, known=records)`` returns how each ended (``TaskStatus``), not
        its record. A message a task at most, where ``wait`` gets every revision of every record
        (3 or so a task in a pipeline): given tasks, it hears only those no other of them depends
        on (a completion says that what it depended on is done), as long as they are 256 at most;
        more are listened to through the endings of every task on the board. On a signed board, or
        when nothing of the tasks is heard for 5 s, it watches their records as ``wait`` does."""
        return Endings(self, tasks)

    async def result(self, task_id: str, timeout: float | None = None) -> JsonValue:
        """The result of ``task_id`` once it is done (waiting for it if need be): ``TaskFailed``
        if it failed, died or was blocked, ``TaskCancelled`` if it was cancelled, ``TaskNotFound``
        if there is no such task, ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
        return await self._outcome(await self._reading.final(task_id, timeout))

    async def run(
        self, task: Task | Mapping[str, Any], timeout: float | None = None, *, budget: Budget | None = None
    ) -> JsonValue:
        """Submit ``task`` and return its result once it is done: ``submit`` then ``result``, with
        their errors. What a caller that wants one answer writes: the wait opens no watch, and
        listens from before the submission, so it need not read the record it wrote."""
        parsed = parse_task(task)
        async with Ending(self._reading, parsed.id) as ending:
            [known] = await self._submission.submit_revisions([parsed], budget)
            record = await ending.final(known, timeout)
        return await self._outcome(record)

    async def _outcome(self, record: TaskRecord) -> JsonValue:
        """What ``result`` makes of a terminal ``record``: its result, or the error it ended with."""
        task_id = record.task.id
        if record.status is TaskStatus.DONE:
            return await self.result_of(record)
        if record.status is TaskStatus.CANCELLED:
            raise TaskCancelled(f"task {task_id!r} was cancelled: {record.error}", record)
        raise TaskFailed(f"task {task_id!r} is {record.status.value}: {record.error}", record)

    async def result_of(self, record: TaskRecord) -> JsonValue:
        """The result ``record`` holds, read from the artifact store when it is too big to be inline
        (``ArtifactNotFound`` once it has expired)."""
        if record.result_ref is None:
            return record.result
        return await self.artifacts.get_json(record.result_ref)

    async def payload_of(self, task: Task) -> JsonValue:
        """The payload of ``task``, read from the artifact store when it is too big to be inline."""
        if task.payload_ref is None:
            return task.payload
        return await self.artifacts.get_json(task.payload_ref)

    async def get_artifact(self, ref: ArtifactRef) -> bytes:
        """The bytes of an artifact (e.g. one a handler stored with ``ctx.put_artifact``), its
        digest checked; ``ArtifactNotFound`` when it has expired or never existed."""
        return await self.artifacts.get(ref)

    # ----------------------------------------------------------------- submitting

    async def submit(self, task: Task | Mapping[str, Any], *, budget: Budget | None = None) -> TaskRecord:
        """Submit one task. See ``submit_many``."""
        return (await self.submit_many([task], budget=budget))[0]

    async def submit_many(
        self, tasks: Sequence[Task | Mapping[str, Any]], *, budget: Budget | None = None
    ) -> list[TaskRecord]:
        """Submit a batch of tasks (a DAG may span the batch and tasks already on the board).

        Everything is validated before anything is announced: malformed fields (``InvalidTask``),
        oversized payloads (``PayloadTooLarge``), duplicate ids or ids on the board with another
        definition (``TaskExists``), unknown dependencies (``UnknownDependency``) and cycles
        (``DependencyCycle``). A rejected batch leaves nothing on the board.

        Submitting is idempotent by task id: a task already on the board with the same definition
        is accepted as it is, and whatever a failed earlier submission left undone (announcing it,
        linking it to its dependencies, its trail event) is completed. So a caller that lost the
        answer to a submission, or crashed during it, can simply submit again.

        Writes are pipelined (up to 256 in flight), so a large batch costs about one round trip
        per 256 tasks rather than several per task.

        ``budget``: what the batch may spend (``Budget(id=..., tokens=..., cost=...)``, opened in
        ``ants_budgets``; the same one again for a resubmission). Each task is charged what its
        handlers report (``ctx.usage``); once it is spent, its tasks not yet started fail unclaimed
        with the reason. Later submissions join it by naming it in ``Task.budget``.
        """
        return await self._submission.submit_many(tasks, budget)

    async def budget(self, budget_id: str) -> Budget:
        """The budget ``budget_id`` and what it has spent; ``BudgetNotFound`` if there is none."""
        check_id(budget_id, what="budget id")
        budget = await self._core.budgets.get(budget_id)
        if budget is None:
            raise BudgetNotFound(f"no budget {budget_id!r}")
        return budget

    async def usage(self, root: str) -> Usage:
        """What ``root`` and every task under it (its dependents, and theirs) reported spending
        (``TaskNotFound`` if there is no ``root``; dependents whose records expired count nothing)."""
        return await self._reading.usage(root)

    # ----------------------------------------------------------------- rate limits

    async def set_limit(
        self,
        capability: str,
        *,
        requests: int | None = None,
        tokens: int | None = None,
        per: float = 60.0,
        by: str | None = None,
    ) -> Limit:
        """Limit, swarm-wide, the work started on tasks that require ``capability``: at most
        ``requests`` handler runs and/or ``tokens`` reported tokens (``ctx.usage``) in any ``per``
        seconds. Every agent takes from the shared window before it runs such a task; one that
        finds none left hands the ticket back for when there will be (not an attempt) and pulls
        no more of that work until then. Replaces an existing limit. (Tasks that require nothing
        are limited as capability ``any``.)"""
        try:
            limit = Limit(capability=capability, requests=requests, tokens=tokens, per=per, set_by=by)
        except pydantic.ValidationError as exc:
            raise InvalidTask(f"invalid limit: {exc.errors()[0]['msg']}") from exc
        return await self.rates.set(limit)

    async def limits(self) -> list[Limit]:
        """Every rate limit, by capability."""
        return await self.rates.all()

    async def remove_limit(self, capability: str) -> None:
        """Lift the limit on ``capability``; ``LimitNotFound`` if there is none."""
        await self.rates.remove(capability)

    # ----------------------------------------------------------------- schedules

    async def schedule(
        self, name: str, when: str, template: Task | Mapping[str, Any], *, by: str | None = None
    ) -> Schedule:
        """Submit ``template`` on a schedule the NATS server keeps (no process of ours runs a clock).

        ``when`` is ``'@every 30s'``, ``'@hourly'`` (or ``@daily``, ``@weekly``, ...), a cron line
        (``'0 3 * * *'``; six fields put seconds first) or ``'@at 2026-12-01T09:00:00Z'`` for once;
        all in UTC. Each firing submits the template as task ``<name>-<YYYYmmddTHHMMSSZ>`` (the
        template's own id is not used); it may not depend on tasks nor carry a fixed deadline or
        ``not_before``. Scheduling an existing name replaces that schedule. Agents relay the
        firings: with none running, missed firings collapse to one task when the first one starts.
        ``InvalidSchedule`` for a bad name, timing or template.
        """
        return await self._schedules.add(name, when, template, by=by)

    async def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        return await self._schedules.all()

    async def unschedule(self, name: str, *, by: str | None = None) -> None:
        """Remove schedule ``name`` (tasks it already submitted stay); ``ScheduleNotFound`` if none."""
        await self._schedules.remove(name, by=by)

    async def relay_schedules(self) -> None:
        """Turn the schedules' firings into tasks until cancelled: the agent runtime runs this, and
        every agent shares one consumer of the firings, so each firing is submitted once."""
        await self._schedules.relay_forever()

    # ----------------------------------------------------------------- claiming and keeping a claim

    async def take(
        self, ticket: Ticket, msg: Msg, agent_id: str, *, probation: bool = False, trust_ticket: bool = True
    ) -> Lease | NotTaken:
        """Claim the task of ``ticket``, delivered as ``msg``, for ``agent_id``: the agent runtime's claim.

        The un-acked delivery of ``msg`` is the lease: the caller keeps it un-acked while it works
        (``heartbeat`` sends ``in_progress``) and acks it once the task is settled. On a first
        delivery the ticket's copy of the ready record stands for the record (no read), unless
        ``trust_ticket`` is False: the caller may have missed news of the task since (a cancel).
        """
        return await self._claims.take(ticket, msg, agent_id, probation=probation, trust_ticket=trust_ticket)

    async def claim(self, task_id: str, agent_id: str, *, probation: bool = False) -> Lease | NotTaken:
        """Try to claim ``task_id`` for ``agent_id`` directly: a ``Lease`` if this call won, else
        ``NotTaken`` (why not).

        A direct claim holds no ticket, so its lease is the key ``ants_leases/<task id>.<agent>`` with a
        per-key TTL, renewed by ``heartbeat``. An agent quarantined for one of the task's
        capabilities is refused unless ``probation`` (the runtime sets it once a ticket has been
        offered ``probation_after`` times) and the task has more than one attempt left.
        """
        return await self._claims.claim(task_id, agent_id, probation=probation)

    async def confirm(self, lease: Lease) -> None:
        """Write a deferred claim now (a no-op once written): the record reads ``claimed``, and the
        token is final. ``LeaseLost`` if someone else claimed or finished the task meanwhile."""
        await self._claims.confirm(lease)

    async def heartbeat(self, lease: Lease) -> None:
        """Extend ``lease`` by a full TTL (writing a deferred claim first); ``LeaseLost`` if it
        expired or was replaced."""
        await self._claims.heartbeat(lease)

    async def progress(self, lease: Lease, fraction: float, note: str = "") -> None:
        """Leave a progress mark for a held task on the trail (writing a deferred claim first:
        a task that reports progress is one worth showing as claimed)."""
        await self._settlement.progress(lease, fraction, note)

    # ----------------------------------------------------------------- settling

    async def complete(
        self, lease: Lease, result: JsonValue = None, *, usage: Usage | None = None
    ) -> TaskRecord:
        """Mark the task done with ``result`` (JSON). ``LeaseLost`` if the token is stale.
        ``usage``: what the attempt spent, kept on its attempt (and so counted by the ledger)."""
        return await self._settlement.complete(lease, result, usage=usage)

    async def fail(
        self, lease: Lease, error: str, *, retry: bool = True, usage: Usage | None = None
    ) -> TaskRecord:
        """Record a failed attempt. With ``retry`` the task returns to pending (or goes dead after
        ``max_attempts``); without, it fails for good and so do its dependents."""
        return await self._settlement.fail(lease, error, retry=retry, usage=usage)

    async def release(
        self,
        lease: Lease,
        *,
        declined: str | None = None,
        reason: str | None = None,
        usage: Usage | None = None,
    ) -> TaskRecord:
        """Give the task back untouched, e.g. on shutdown (``reason`` says why, if you like); with
        ``declined``, the same as ``decline(lease, declined)``. Neither counts as an attempt."""
        if declined is not None:
            return await self.decline(lease, declined, usage=usage)
        return await self._settlement.release(lease, reason=reason, usage=usage)

    async def decline(
        self,
        lease: Lease,
        reason: str,
        *,
        offer: str | None = None,
        retry_after: float | None = None,
        usage: Usage | None = None,
    ) -> TaskRecord:
        """Turn the task down, saying why: not an attempt, and free (reputation counts no declines).
        The record keeps one note per decliner (count, last reason and time); the decline stands
        while the decliner's ``offer`` (``AgentCard.offer``; read from its live card when not
        given) is unchanged. When no live agent able to take the task is left that has not
        declined it, the task becomes unroutable with the reason (or fails, with
        ``fail_unroutable``), and waits for an agent that joins or changes its offer. With
        ``retry_after`` the decline is a "not now" that lapses after that many seconds.
        ``held_back(record)`` (of the record returned) says what becomes of its ticket."""
        if offer is None:
            card = await self._core.directory.card(lease.agent_id)
            offer = "" if card is None else card.offer
        return await self._declines.decline(lease, reason, offer=offer, retry_after=retry_after, usage=usage)

    async def held_back(self, record: TaskRecord) -> float | None:
        """What becomes of the ticket of a task just declined: None, it is done with (ack it: the
        task ended, or waits unroutable in ``ants_unroutable``); else seconds to hold it back (0:
        others may take it now; more: until a live agent's "not now" lapses, or until the
        deadline of a task set aside)."""
        return await self._declines.held_back(record)

    async def reconsider(self, task_id: str, *, by: str | None = None) -> float | Literal["take"] | None:
        """For a ticket of a task that ``by`` declined already: the task is marked unroutable if
        every live agent able to take it has declined it too. Returns what becomes of the ticket:
        as ``held_back``, or ``"take"`` when the task waits for no taker (finished, held, past its
        deadline ...): then the ticket is judged as any other, by a claim."""
        return await self._declines.reconsider(task_id, by=by)

    async def unroutable_ids(self) -> list[str]:
        """Ids of the tasks set aside as unroutable (kept in ``ants_unroutable``, with no ticket)
        until an agent able to take them joins or changes its offer."""
        return await self._declines.unroutable_ids()

    async def reroute(self, card: AgentCard, *, forgiven: Iterable[str] = ()) -> list[str]:
        """Announce again the unroutable tasks the agent of ``card`` could take and has not
        declined with its present offer (an agent calls it when it joins or changes its offer);
        the declines of ``forgiven`` tasks by that agent are taken back first. Returns the ids
        announced again."""
        return await self._declines.reroute(card, forgiven=forgiven)

    # ----------------------------------------------------------------- asking for input

    async def ask(
        self, lease: Lease, question: str, *, timeout: float, usage: Usage | None = None
    ) -> TaskRecord:
        """Park the held task until someone answers ``question``: its status becomes
        ``waiting_input`` (the question in its record, ``task.asked`` on the trail) and the claim
        ends without counting as an attempt. Unanswered after ``timeout`` seconds, it fails with the
        reason. The agent runtime calls this for ``ctx.ask``; a holder calling it directly should
        hand its ticket back with ``timeout`` as the delay (the ticket is the question's timer)."""
        return await self._asking.ask(lease, question, timeout=timeout, usage=usage)

    async def answer(
        self, task_id: str, text: str, *, question: int | None = None, by: str | None = None
    ) -> TaskRecord:
        """Answer the question ``task_id`` waits on: the task is claimable again, and the handler
        that claims it next finds ``text`` in ``ctx.answers`` (its ``ctx.ask`` returns it).
        ``question``: the index (from 0, in ``record.questions``) of the question this answers; an
        answer meant for an earlier one (late, or sent twice) is then refused, not taken as the
        answer to the next. ``NotWaiting`` if the task waits for no answer (or for another
        question), ``TaskFinished`` if it has ended (a question that timed out fails its task),
        ``TaskNotFound`` if there is no such task."""
        return await self._asking.answer(task_id, text, question=question, by=by)

    async def cancel(self, task_id: str, reason: str = "cancelled", *, by: str | None = None) -> TaskRecord:
        """Cancel a pending, waiting or claimed task: its status becomes ``cancelled`` (terminal,
        ``reason`` in ``error``), ``task.cancelled`` goes on the trail, its dependents fail as
        blocked, and a running handler is cancelled within about a second (its late result is
        rejected). Cancelling a cancelled task changes nothing; a finished one raises
        ``TaskFinished``; an unknown one ``TaskNotFound``. ``by`` names who cancelled (signed
        with that agent's identity when this board holds it)."""
        return await self._cancellation.cancel(task_id, reason, by=by)

    async def retry(self, task_id: str, *, by: str | None = None) -> TaskRecord:
        """Put a failed or dead task back to pending with a fresh attempt budget (its history is
        kept); the dependents it blocked wait on it again. ``task.retried`` goes on the trail.
        ``InvalidTask`` for a task in any other state."""
        return await self._requeue.retry(task_id, by=by)

    async def mark_bad(self, task_id: str, reason: str, *, by: str | None = None) -> None:
        """Record that a done task's result was wrong: its completer's reputation pays for it."""
        check_id(task_id)
        await self._settlement.mark_bad(task_id, reason, by=by)
