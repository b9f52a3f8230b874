"""Why an unfinished task waits: one answer, from its record, the live directory and what else holds
work back (a spent budget, rate limits, quarantine).

``waiting_for`` is the rule, a pure function: given a record, the live cards, the facts looked up
for it and the time, it names the first thing the task waits for, in about the order an agent
meeting its ticket would run into it: the record's own state (held, asking, dependencies,
``not_before``), the directory (nobody able, or every able agent declined), a failed attempt's
backoff, then the budget, the rate limits and the quarantine; otherwise it is ready and waits for
a free agent. The cards are read live because ``record.unroutable`` is only as fresh as the
record's last write.

``why_waiting`` and ``why_waiting_many`` look the facts up on a board: the directory once per call,
the last heartbeat of each held task, and the ledger, the rate limits and the budgets only for the
tasks that nothing before them explains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from . import matching
from .board import TaskBoard
from .errors import BudgetNotFound
from .models import ANY_CAPABILITY, AgentCard, Budget, Limit, TaskRecord, TaskStatus, utcnow
from .reputation import ReputationConfig
from .throttle import Throttle


class WaitReason(StrEnum):
    """What an unfinished task waits for."""

    HELD = "held"
    """An agent holds it (works on it) while its lease lives."""
    ANSWER = "answer"
    """It asked a question (``ctx.ask``) and waits for the answer."""
    DEPENDENCIES = "dependencies"
    """Tasks it depends on are not done yet."""
    NOT_BEFORE = "not_before"
    """Its ``not_before`` has not come yet."""
    UNROUTABLE = "unroutable"
    """No live agent has its capabilities or handles its kind."""
    DECLINED = "declined"
    """Every live agent able to take it declined it."""
    RETRYING = "retrying"
    """An attempt failed; its ticket comes back after the task's backoff."""
    BUDGET_SPENT = "budget_spent"
    """Its budget is spent: it fails unclaimed when an agent next meets it."""
    RATE_LIMITED = "rate_limited"
    """A rate limit or a provider's hold keeps work of its capabilities back."""
    QUARANTINED = "quarantined"
    """Only agents quarantined for its capabilities can take it."""
    READY = "ready"
    """Nothing holds it back: it waits for a free agent."""


class Waiting(BaseModel):
    """Why an unfinished task waits, in words and as a code."""

    model_config = ConfigDict(frozen=True)

    reason: WaitReason
    text: str = Field(description="The reason in words, naming whatever it waits for.")
    until: datetime | None = Field(
        default=None, description="When that is expected to end (as far as anyone can tell), if known."
    )
    agents: tuple[str, ...] = Field(
        default=(), description="The agents concerned: its holder, its decliners, the quarantined, the able."
    )


@dataclass(frozen=True)
class RateHold:
    """Work of a capability held back until ``until``, and why, in words."""

    until: datetime
    why: str


@dataclass(frozen=True)
class WaitingFacts:
    """What a task's wait depends on besides its record and the cards, as looked up on the board.
    A fact not looked up is simply absent (an empty mapping)."""

    lease_ttl: float
    """Seconds a claim lives past its last heartbeat (``BoardConfig.lease_ttl``)."""
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    heartbeats: Mapping[str, datetime] = field(default_factory=dict)
    """Task id: the time of its holder's latest heartbeat."""
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    """Budget id: the budget."""
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Agent id: its score per capability (an agent or capability missing scores 0.5, unknown)."""
    rate_holds: Mapping[str, RateHold] = field(default_factory=dict)
    """Capability: the hold on its work (a provider's, or a full window)."""


def waiting_for(
    record: TaskRecord, cards: Iterable[AgentCard], facts: WaitingFacts, now: datetime
) -> Waiting | None:
    """Why the task of ``record`` waits at ``now`` (None once it is finished), given the live
    ``cards`` and the ``facts`` looked up for it."""
    if record.status.terminal:
        return None
    cards = list(cards)
    return _before_lookups(record, cards, facts, now) or _after_lookups(record, cards, facts, now)


def _before_lookups(
    record: TaskRecord, cards: Sequence[AgentCard], facts: WaitingFacts, now: datetime
) -> Waiting | None:
    """What the record and the directory alone tell (None: the facts looked up must tell)."""
    task = record.task
    if record.status is TaskStatus.CLAIMED:
        return _held(record, facts, now)
    if record.status is TaskStatus.WAITING_INPUT:
        question = record.questions[-1]
        text = f"waits for an answer to {question.text!r}; without one by {_at(question.until)} it fails"
        return Waiting(reason=WaitReason.ANSWER, text=text, until=question.until)
    if record.waiting_on:
        text = f"waits for its dependencies to be done: {', '.join(record.waiting_on)}"
        return Waiting(reason=WaitReason.DEPENDENCIES, text=text)
    if task.not_before is not None and now < task.not_before:
        return Waiting(
            reason=WaitReason.NOT_BEFORE, text=f"not before {_at(task.not_before)}", until=task.not_before
        )
    unroutable = matching.unroutable_because(cards, task)
    if unroutable is not None:
        return Waiting(reason=WaitReason.UNROUTABLE, text=f"unroutable: {unroutable[1]}")
    able = [card for card in cards if card.can_take(task)]
    declined = matching.declined_by_all(able, record, now) if able else None
    if declined is not None:
        standing = [note for note in record.declines if any(note.stands(card, now) for card in able)]
        lapse = record.declines_lapse(now, able={card.id: card for card in able})
        return Waiting(
            reason=WaitReason.DECLINED,
            text=f"unroutable: {declined[1]}",
            until=None if lapse is None else now + timedelta(seconds=lapse),
            agents=tuple(note.agent for note in standing),
        )
    return _retrying(record, now)


def _held(record: TaskRecord, facts: WaitingFacts, now: datetime) -> Waiting:
    holder, since = record.holder or "an agent", record.claimed_at
    beats = [at for at in (since, facts.heartbeats.get(record.task.id)) if at is not None]
    until = max(beats) + timedelta(seconds=facts.lease_ttl) if beats else None
    text = f"held by {holder}" + ("" if since is None else f" since {_at(since)}")
    if until is not None and until < now:
        text += f"; its lease ran out about {_at(until)}: the next agent to meet its ticket takes over"
    elif until is not None:
        text += f"; its lease runs to about {_at(until)}, renewed by each heartbeat"
    return Waiting(reason=WaitReason.HELD, text=text, until=until, agents=(holder,))


def _retrying(record: TaskRecord, now: datetime) -> Waiting | None:
    """A failed attempt's backoff, while it may still last (the ticket comes back after it)."""
    if not record.attempts or record.attempts[-1].outcome != "failed":
        return None
    last = record.attempts[-1]
    failures = sum(1 for attempt in record.attempts if attempt.outcome == "failed")
    # Without the random share the agent takes off: the latest the ticket comes back.
    latest = last.ended_at + timedelta(seconds=record.task.retry.delay(failures, rand=lambda: 0.0))
    if now >= latest:
        return None
    text = (
        f"retrying: attempt {len(record.attempts)} by {last.agent} failed ({last.error or 'no reason given'})"
    )
    text += f"; its ticket comes back by {_at(latest)}"
    return Waiting(reason=WaitReason.RETRYING, text=text, until=latest, agents=(last.agent,))


def _after_lookups(
    record: TaskRecord, cards: Sequence[AgentCard], facts: WaitingFacts, now: datetime
) -> Waiting:
    """What the budget, the rate limits and the agents' scores tell; else it is ready."""
    task = record.task
    budget = facts.budgets.get(task.budget) if task.budget is not None else None
    spent = None if budget is None else budget.exhausted_because
    if spent is not None:
        text = f"{spent}: it fails unclaimed when an agent next meets it"
        return Waiting(reason=WaitReason.BUDGET_SPENT, text=text)
    capabilities = _limited_as(task.requires)
    holds = [facts.rate_holds[cap] for cap in capabilities if cap in facts.rate_holds]
    holds = [hold for hold in holds if hold.until > now]
    if holds:
        until = max(hold.until for hold in holds)
        text = f"rate-limited until {_at(until)}: " + "; ".join(hold.why for hold in holds)
        return Waiting(reason=WaitReason.RATE_LIMITED, text=text, until=until)
    able = [card for card in cards if card.can_take(task) and not record.declined(card, now)]
    quarantined = {card.id: _distrusted(card.id, capabilities, facts) for card in able}
    if able and all(quarantined.values()):
        return _quarantined(record, quarantined, facts.reputation)
    free = sum(1 for card in able if card.spare > 0)
    if not able:
        text = "ready, waiting for an agent: none is live"
    else:
        text = f"ready, waiting for a free agent ({_count(len(able), 'able live agent')}, {free} free)"
    return Waiting(reason=WaitReason.READY, text=text, agents=tuple(card.id for card in able))


def _distrusted(agent: str, capabilities: Sequence[str], facts: WaitingFacts) -> list[str]:
    """``agent``'s scores under the quarantine line among ``capabilities``, in words."""
    scores = facts.scores.get(agent, {})
    line = facts.reputation.quarantine_below
    return [f"{cap} {scores[cap]:.2f}" for cap in capabilities if scores.get(cap, 0.5) < line]


def _quarantined(
    record: TaskRecord, quarantined: Mapping[str, list[str]], config: ReputationConfig
) -> Waiting:
    who = ", ".join(f"{agent} ({', '.join(scores)})" for agent, scores in quarantined.items())
    text = f"only agents quarantined for its capabilities can take it: {who}"
    # As the claim rule has it: probation never spends a task's last attempt on a distrusted agent.
    if record.counted_attempts + 1 >= record.task.max_attempts:
        text += (
            "; its last attempt is not spent on one: it waits for another agent, or for a score to "
            f"recover (evidence halves every {config.half_life:g}s)"
        )
    else:
        text += (
            f"; one may take it on probation once its ticket has been offered {config.probation_after} times"
        )
    return Waiting(reason=WaitReason.QUARANTINED, text=text, agents=tuple(quarantined))


def _limited_as(requires: Iterable[str]) -> tuple[str, ...]:
    """The capabilities whose rate limits and holds apply to work requiring ``requires``."""
    return tuple(requires) or (ANY_CAPABILITY,)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------- looking the facts up


async def why_waiting(board: TaskBoard, record: TaskRecord) -> Waiting | None:
    """Why the task of ``record`` waits (None once it is finished), as ``waiting_for`` judges it
    with the facts of ``board`` now."""
    return (await why_waiting_many(board, [record])).get(record.task.id)


async def why_waiting_many(board: TaskBoard, records: Iterable[TaskRecord]) -> dict[str, Waiting]:
    """Why each unfinished task of ``records`` waits, by task id. The directory is read once; the
    ledger, the rate limits and the budgets only when some task is left unexplained without them."""
    unfinished = [record for record in records if not record.status.terminal]
    if not unfinished:
        return {}
    cards = await board.directory.cards()
    now = utcnow()
    heartbeats: dict[str, datetime] = {}
    for record in unfinished:
        if record.status is TaskStatus.CLAIMED:
            beat = await board.trail.last("task.heartbeat", record.task.id)
            if beat is not None:
                heartbeats[record.task.id] = beat.at
    facts = WaitingFacts(board.config.lease_ttl, board.reputation.config, heartbeats=heartbeats)
    found = {record.task.id: _before_lookups(record, cards, facts, now) for record in unfinished}
    left = [record for record in unfinished if found[record.task.id] is None]
    if left:
        facts = await _looked_up(board, left, cards, facts)
        found |= {record.task.id: _after_lookups(record, cards, facts, now) for record in left}
    return {task_id: waiting for task_id, waiting in found.items() if waiting is not None}


async def _looked_up(
    board: TaskBoard, records: Sequence[TaskRecord], cards: Sequence[AgentCard], facts: WaitingFacts
) -> WaitingFacts:
    """``facts`` with the budgets, the rate holds and the scores that ``records`` depend on."""
    budgets: dict[str, Budget] = {}
    for budget_id in {r.task.budget for r in records if r.task.budget is not None}:
        try:
            budgets[budget_id] = await board.budget(budget_id)
        except BudgetNotFound:
            continue  # gone (or never opened): nothing holds its tasks back
    capabilities = sorted({cap for record in records for cap in _limited_as(record.task.requires)})
    able = {card.id for card in cards if any(card.can_take(record.task) for record in records)}
    # Each agent's ledger is read once (and cached) for every capability at once.
    scores = {agent: await board.reputation.scores(agent, capabilities) for agent in sorted(able)}
    holds = await _rate_holds(board, capabilities)
    return dataclasses.replace(facts, budgets=budgets, scores=scores, rate_holds=holds)


async def _rate_holds(board: TaskBoard, capabilities: Sequence[str]) -> dict[str, RateHold]:
    """The holds on ``capabilities``: a provider's (``rate.held`` marks, heard as every agent hears
    them) and a limit whose window is full (until it has room)."""
    holds: dict[str, RateHold] = {}
    async with Throttle(board, "why-waiting") as throttle:
        for cap in capabilities:
            held = throttle.held_for([cap])
            if held > 0:
                until = utcnow() + timedelta(seconds=held)
                holds[cap] = RateHold(until, f"{cap} is held back: a provider said too many requests")
    for limit in await board.limits():
        if limit.capability in capabilities and limit.capability not in holds:
            wait = await board.rates.room(limit)
            if wait > 0:
                until = utcnow() + timedelta(seconds=wait)
                holds[limit.capability] = RateHold(
                    until, f"{_limit_words(limit)} on {limit.capability} is used up"
                )
    return holds


def _limit_words(limit: Limit) -> str:
    parts = [
        f"{n} {what}" for n, what in ((limit.requests, "runs"), (limit.tokens, "tokens")) if n is not None
    ]
    return f"the limit of {' and '.join(parts)} per {limit.per:g}s"
