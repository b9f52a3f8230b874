"""Looking at the swarm: ``tasks``, ``agents``, ``reputation`` and ``trail``."""

from __future__ import annotations

import argparse
from contextlib import aclosing

from ..a2a import a2a_card
from ..board import BoardConfig
from ..ledger import Ledger
from ..models import utcnow
from ..views import agents_table, event_line, reputation_table
from .command import command, connect
from .output import emit_json, show, show_tasks


@command("tasks", "list the tasks on the board, each unfinished one with why it waits", json_out=True)
async def tasks(args: argparse.Namespace) -> int:
    await show_tasks(args, lambda board: board.all_tasks())
    return 0


def _agents_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a2a", action="store_true", help="print each as an A2A (v0.3) agent card, in JSON")


@command("agents", "list the live agents and their load", _agents_arguments, json_out=True)
async def agents(args: argparse.Namespace) -> int:
    if not args.a2a:
        await show(args, lambda board: board.directory.cards(), agents_table)
        return 0
    async with connect(args) as board:
        cards = await board.directory.cards()
    emit_json([a2a_card(card, server_url=args.server) for card in cards])
    return 0


@command("reputation", "list reputation scores per agent and capability", json_out=True)
async def reputation(args: argparse.Namespace) -> int:
    half_life = BoardConfig().reputation.half_life
    rows = await show(
        args, lambda board: Ledger(board.nc).all(), lambda rows: reputation_table(rows, utcnow(), half_life)
    )
    if not rows and not args.json:
        print("(no scores yet: they come from the ledger service, ants-ledger, following the trail)")
    return 0


def _trail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default="ants.trail.>", help="subject filter")
    parser.add_argument("--follow", action="store_true", help="keep printing new events")


@command("trail", "print trail events", _trail_arguments, json_out=True)
async def trail(args: argparse.Namespace) -> int:
    async with connect(args) as board:
        if not args.follow:
            for event in await board.trail.replay(args.subject):
                print(event.model_dump_json() if args.json else event_line(event))
            return 0
        async with aclosing(board.trail.follow(args.subject)) as events:
            async for event in events:
                print(event.model_dump_json() if args.json else event_line(event), flush=True)
    return 0


COMMANDS = (tasks, agents, reputation, trail)
