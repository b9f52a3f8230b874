"""Looking at the swarm: ``tasks``, ``agents``, ``reputation`` and ``trail``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import aclosing
from datetime import datetime, timedelta

from ..a2a import a2a_card
from ..board import BoardConfig, TaskBoard
from ..errors import UsageError
from ..ledger import Ledger
from ..models import TaskRecord, TaskStatus, TrailEvent, utcnow
from ..names import TRAIL_SUBJECT_PREFIX, is_valid_filter
from ..views import OwnerStanding, agents_table, event_line, owner_standings, owners_table, reputation_table
from .command import command, connect
from .output import emit_json, show, show_tasks
from .task_input import seconds_of

DEFAULT_LIMIT = 50


def _tasks_arguments(parser: argparse.ArgumentParser) -> None:
    statuses = [s.value for s in TaskStatus]
    parser.add_argument(
        "--status", action="append", choices=statuses, help="only tasks in this status (repeatable)"
    )
    parser.add_argument("--kind", help="only tasks of this kind")
    parser.add_argument(
        "--route", help="only tasks on this route (their required capabilities, e.g. gpu_llm)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N, newest first ({DEFAULT_LIMIT})",
    )
    parser.add_argument("--all", action="store_true", help="every task on the board, however many")


@command(
    "tasks",
    "list the tasks on the board, newest first, each unfinished one with why it waits",
    _tasks_arguments,
    json_out=True,
    creates=False,
)
async def tasks(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    statuses = set(args.status or ())

    def keep(record: TaskRecord) -> bool:
        return (
            (not statuses or record.status.value in statuses)
            and (args.kind is None or record.task.kind == args.kind)
            and (args.route is None or record.task.route == args.route)
        )

    held = 0

    async def read(board: TaskBoard) -> list[TaskRecord]:
        nonlocal held
        if args.all:
            return [r for r in await board.all_tasks() if keep(r)]
        found, held = await board.recent(args.limit, keep)
        return found

    shown = await show_tasks(args, read)
    filtered = bool(statuses or args.kind or args.route)
    if not args.all and not args.json and len(shown) == args.limit:
        more = "more may match" if filtered else f"{max(held - len(shown), 0):,} more on the board"
        print(f"({len(shown)} shown, newest first; {more}: --limit N, --all, or --status/--kind/--route)")
    return 0


def _agents_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a2a", action="store_true", help="print each as an A2A (v0.3) agent card, in JSON")


@command("agents", "list the live agents and their load", _agents_arguments, json_out=True, creates=False)
async def agents(args: argparse.Namespace) -> int:
    if not args.a2a:
        await show(args, lambda board: board.directory.cards(), agents_table)
        return 0
    async with connect(args) as board:
        cards = await board.directory.cards()
    emit_json([a2a_card(card, server_url=args.server) for card in cards])
    return 0


def _reputation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by-owner", action="store_true", help="one line per owner of a bazaar (agent ids OWNER-NAME)"
    )


@command(
    "reputation",
    "list reputation scores per agent and capability",
    _reputation_arguments,
    json_out=True,
    creates=False,
)
async def reputation(args: argparse.Namespace) -> int:
    half_life = BoardConfig().reputation.half_life
    if args.by_owner:

        async def standings(board: TaskBoard) -> list[OwnerStanding]:
            return owner_standings(await Ledger(board.nc).all(), utcnow(), half_life)

        rows: Sequence[object] = await show(args, standings, owners_table)
    else:
        rows = await show(
            args,
            lambda board: Ledger(board.nc).all(),
            lambda rows: reputation_table(rows, utcnow(), half_life),
        )
    if not rows and not args.json:
        print("(no scores yet: they come from the ledger service, ants-ledger, following the trail)")
    return 0


def _trail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subject",
        default=f"{TRAIL_SUBJECT_PREFIX}.>",
        help="subject filter, e.g. 'task.completed.>' (the ants.trail. prefix may be left out)",
    )
    parser.add_argument("--last", type=int, metavar="N", help="only the last N events")
    parser.add_argument(
        "--since", metavar="TIME", help="events from TIME (ISO 8601) or this long ago (30s, 5m, 2h)"
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep printing events as they come (from now, or from --since)"
    )


@command(
    "trail",
    "print trail events (with --json, one JSON object per line)",
    _trail_arguments,
    json_out=True,
    creates=False,
)
async def trail(args: argparse.Namespace) -> int:
    subject = _trail_subject(args.subject)
    since = _since(args.since)
    if args.last is not None and args.last < 1:
        raise UsageError("--last must be at least 1")

    def say(event: TrailEvent) -> None:
        print(event.model_dump_json() if args.json else event_line(event), flush=True)

    async with connect(args) as board:
        if not args.follow:
            if args.last and since is None:
                found = await board.trail.newest(args.last, subject)
            else:
                found = await board.trail.replay(subject, since=since)
            for event in found[-args.last :] if args.last else found:
                say(event)
            return 0
        follow = board.trail.follow(subject, since=since, new_only=since is None)
        async with aclosing(follow) as events:
            async for event in events:
                say(event)
    return 0


def _trail_subject(given: str) -> str:
    """``given`` as a trail filter: the ``ants.trail.`` prefix added when it was left out."""
    if not is_valid_filter(given):
        raise UsageError(
            f"--subject {given!r} is not a subject filter: tokens separated by '.', none empty, no "
            "spaces; '*' stands for one whole token, '>' for the rest (last only), e.g. 'task.completed.>'"
        )
    if given == TRAIL_SUBJECT_PREFIX or given.startswith(f"{TRAIL_SUBJECT_PREFIX}."):
        return given
    if given.startswith("ants.") or given.startswith("$"):
        raise UsageError(
            f"--subject {given!r} is not on the trail: use {TRAIL_SUBJECT_PREFIX}.<kind>... or <kind>..."
        )
    return f"{TRAIL_SUBJECT_PREFIX}.{given}"


def _since(given: str | None) -> datetime | None:
    """``--since`` as a time: ISO 8601 with a time zone, or a duration back from now."""
    if given is None:
        return None
    try:
        at = datetime.fromisoformat(given)
    except ValueError:
        return utcnow() - timedelta(seconds=seconds_of(given, flag="--since"))
    if at.tzinfo is None:
        raise UsageError(f"--since {given!r}: give a time zone (e.g. 2026-12-05T10:00:00Z)")
    return at


COMMANDS = (tasks, agents, reputation, trail)
