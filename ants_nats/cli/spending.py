"""What work may spend and what it spent: ``usage``, and ``limit set|ls|rm`` (the rate limits shared
by every agent serving a capability)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..ledger import Ledger
from ..views import limits_table, usage_table
from .command import Group, command, connect
from .output import emit_json, removing, show, show_one


def _usage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", metavar="ROOT", help="the task and every task under it (its dependents)")
    parser.add_argument("--agent", help="only this agent")


@command(
    "usage",
    "what work spent: per agent and capability, or under one task",
    _usage_arguments,
    json_out=True,
    creates=False,
)
async def usage(args: argparse.Namespace) -> int:
    async with connect(args) as board:
        if args.task:
            total = await board.usage(args.task)
            rows = [(f"task {args.task} and under", "*", total)]
        else:
            ledgers = [x for x in await Ledger(board.nc).all() if args.agent in (None, x.agent)]
            rows = [(x.agent, cap, spent) for x in ledgers for cap, spent in sorted(x.usage.items())]
    if args.json:
        emit_json([{"who": who, "capability": cap, **spent.model_dump()} for who, cap, spent in rows])
    else:
        print(usage_table(rows))
    return 0


def _set_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capability")
    parser.add_argument("--per-minute", type=int, default=None, metavar="N", help="handler runs a minute")
    parser.add_argument(
        "--tokens-per-minute", type=int, default=None, metavar="N", help="reported tokens a minute"
    )
    parser.add_argument("--requests", type=int, default=None, metavar="N", help="handler runs per --interval")
    parser.add_argument(
        "--tokens", type=int, default=None, metavar="N", help="reported tokens per --interval"
    )
    parser.add_argument("--interval", type=float, default=None, metavar="S", help="with --requests/--tokens")


@command("set", "set (or replace) the limit on a capability", _set_arguments, json_out=True)
async def set_limit(args: argparse.Namespace) -> int:
    per_minute = args.per_minute is not None or args.tokens_per_minute is not None
    if per_minute and (args.requests is not None or args.tokens is not None or args.interval is not None):
        raise UsageError("give --per-minute/--tokens-per-minute, or --requests/--tokens with --interval")
    for flag, value in (
        ("--per-minute", args.per_minute),
        ("--tokens-per-minute", args.tokens_per_minute),
        ("--requests", args.requests),
        ("--tokens", args.tokens),
    ):
        if value is not None and value < 1:
            raise UsageError(
                f"{flag} {value} would stop every task needing {args.capability!r}: give at least 1 "
                f"(or lift the limit: ants-nats limit rm {args.capability})"
            )
    if per_minute:
        limit = {"requests": args.per_minute, "tokens": args.tokens_per_minute, "per": 60.0}
    else:
        limit = {"requests": args.requests, "tokens": args.tokens, "per": args.interval or 60.0}
    return await show_one(args, lambda board: board.set_limit(args.capability, **limit), limits_table)


@command("ls", "list the rate limits", json_out=True, creates=False)
async def list_limits(args: argparse.Namespace) -> int:
    await show(args, lambda board: board.limits(), limits_table)
    return 0


def _capability(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capability")


@command("rm", "lift the limit on a capability", _capability)
async def remove_limit(args: argparse.Namespace) -> int:
    capability = args.capability
    return await removing(
        args, lambda board: board.remove_limit(capability), f"lifted the limit on {capability}"
    )


LIMIT = Group(
    "limit",
    "rate limits shared by every agent serving a capability: set, ls, rm",
    (set_limit, list_limits, remove_limit),
)
COMMANDS = (usage, LIMIT)
