"""Plain-text tables of the shared state, for the CLI (pure functions: rows in, text out)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel

from .access import owner_of
from .models import AgentCard, AgentLedger, Counts, Limit, Schedule, TaskRecord, TaskStatus, TrailEvent, Usage
from .waiting import Waiting, WaitReason


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns, one header line, one line per row."""
    cells = [[str(h) for h in headers], *([("" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def tasks_table(records: Iterable[TaskRecord], waiting: Mapping[str, Waiting]) -> str:
    """One line per task; an unfinished one's NOTE says why it waits (``waiting``, by task id)."""
    return table(
        ["TASK", "KIND", "STATUS", "HOLDER", "ATTEMPTS", "WAITING ON", "NOTE"],
        (
            [
                r.task.id,
                r.task.kind,
                r.status.value,
                r.holder or "",
                len(r.attempts),
                ",".join(r.waiting_on),
                _note(r, waiting.get(r.task.id)),
            ]
            for r in sorted(records, key=lambda r: r.task.id)
        ),
    )


def schedules_table(schedules: Iterable[Schedule]) -> str:
    """One line per schedule, or a hint when there is none."""
    rows = [
        [s.name, s.when, s.template.kind, ",".join(s.template.requires), s.created_by]
        for s in sorted(schedules, key=lambda s: s.name)
    ]
    if not rows:
        return "no schedules (add one with: ants-nats schedule add NAME WHEN --kind KIND)"
    return table(["SCHEDULE", "WHEN (UTC)", "KIND", "REQUIRES", "BY"], rows)


def limits_table(limits: Iterable[Limit]) -> str:
    """One line per rate limit, or a hint when there is none."""
    rows = [
        [
            x.capability,
            "-" if x.requests is None else x.requests,
            "-" if x.tokens is None else x.tokens,
            f"{x.per:g}s",
        ]
        for x in sorted(limits, key=lambda x: x.capability)
    ]
    if not rows:
        return "no rate limits (set one with: ants-nats limit set CAPABILITY --per-minute N)"
    return table(["CAPABILITY", "REQUESTS", "TOKENS", "PER"], rows)


def usage_table(rows: Iterable[tuple[str, str, Usage]]) -> str:
    """One line per (who, capability) with what its work spent, or a hint when nothing was spent."""
    lines = [[who, cap, u.tokens_in, u.tokens_out, f"{u.cost:g}"] for who, cap, u in rows]
    if not lines:
        return "no usage recorded (handlers report it with ctx.usage; the ledger service counts it)"
    return table(["WHO", "CAPABILITY", "TOKENS IN", "TOKENS OUT", "COST"], lines)


_RESULT_WIDTH = 60


def _note(record: TaskRecord, waiting: Waiting | None) -> str:
    """What a task's line says besides its state: why it waits, its error, or its result."""
    if waiting is not None:
        if waiting.reason is WaitReason.ANSWER:
            return f"{waiting.text} (answer: ants-nats answer {record.task.id} TEXT)"
        return waiting.text
    if record.error:
        return record.error
    if record.status is TaskStatus.DONE:
        ref = record.result_ref
        if ref is not None and record.result is None:  # not read: a listing says where it is
            return f"result: {_size(ref.size)} in ants_artifacts (ants-nats get {record.task.id})"
        text = json.dumps(record.result, separators=(",", ":"))
        return "result: " + (text if len(text) <= _RESULT_WIDTH else text[: _RESULT_WIDTH - 3] + "...")
    return ""


def _size(count: int) -> str:
    """A byte count for people: 900 B, 1.2 kB, 3.4 MB."""
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def agents_table(cards: Iterable[AgentCard]) -> str:
    """One line per live agent."""
    return table(
        ["AGENT", "NAME", "CAPABILITIES", "LOAD", "SOFTWARE"],
        (
            [c.id, c.name, ",".join(sorted(c.capability_names)), f"{c.load}/{c.capacity}", c.software]
            for c in sorted(cards, key=lambda c: c.id)
        ),
    )


def reputation_table(ledgers: Iterable[AgentLedger], now: datetime, half_life: float) -> str:
    """One line per agent and capability, with its score and counts."""
    rows = []
    for ledger in sorted(ledgers, key=lambda entry: entry.agent):
        for cap, counts in sorted(ledger.by_capability.items()):
            score = ledger.scores[cap].value(now, half_life) if cap in ledger.scores else 0.5
            rows.append(
                [
                    ledger.agent,
                    cap,
                    f"{score:.2f}",
                    counts.completed,
                    counts.failed,
                    counts.expired,
                    counts.declined,
                ]
            )
    # Declines cost nothing (see reputation.EVIDENCE), so they are shown apart from the score.
    return table(["AGENT", "CAPABILITY", "SCORE", "DONE", "FAILED", "ABANDONED", "DECLINED"], rows)


class OwnerStanding(BaseModel):
    """An owner's agents' reputation taken together (a bazaar: agent ids are ``<owner>-<name>``)."""

    owner: str
    agents: int
    totals: Counts
    lowest_score: float
    """The lowest score of any of its agents for any capability (0.5: no evidence yet)."""


def owner_standings(ledgers: Iterable[AgentLedger], now: datetime, half_life: float) -> list[OwnerStanding]:
    """Each owner's agents' counts added up, and its worst score, by owner name."""
    by_owner: dict[str, list[AgentLedger]] = {}
    for ledger in ledgers:
        by_owner.setdefault(owner_of(ledger.agent), []).append(ledger)
    standings = []
    for owner, entries in sorted(by_owner.items()):
        totals = Counts()
        for entry in entries:
            totals = totals.model_copy(
                update={
                    field: getattr(totals, field) + getattr(entry.totals, field)
                    for field in Counts.model_fields
                }
            )
        scores = [score.value(now, half_life) for entry in entries for score in entry.scores.values()]
        standings.append(
            OwnerStanding(
                owner=owner, agents=len(entries), totals=totals, lowest_score=min(scores, default=0.5)
            )
        )
    return standings


def owners_table(standings: Sequence[OwnerStanding]) -> str:
    """One line per owner."""
    rows = [
        [
            s.owner,
            s.agents,
            f"{s.lowest_score:.2f}",
            s.totals.completed,
            s.totals.failed,
            s.totals.expired,
            s.totals.forged,
        ]
        for s in standings
    ]
    return table(["OWNER", "AGENTS", "LOWEST", "DONE", "FAILED", "ABANDONED", "FORGED"], rows)


def event_line(event: TrailEvent) -> str:
    """One trail event as a log-like line."""
    who = f" by {event.agent}" if event.agent else ""
    token = f" token={event.token}" if event.token is not None else ""
    data = f" {json.dumps(event.data, separators=(',', ':'))}" if event.data is not None else ""
    return f"{event.seq or '-':>6} {event.at:%H:%M:%S} {event.kind:<18} {event.ref}{who}{token}{data}"
