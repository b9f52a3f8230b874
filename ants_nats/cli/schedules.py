"""``schedule add|ls|rm``: tasks the NATS server submits on a schedule."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidSchedule, UsageError
from ..views import schedules_table
from .command import Group, command
from .output import removing, show, show_one
from .task_input import document, task_arguments, task_from_flags


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="schedule name (1-111 of A-Z a-z 0-9 _ -)")
    parser.add_argument(
        "when", help="'@every 30s', '@hourly', a cron line such as '0 3 * * *', or '@at TIME'"
    )
    parser.add_argument("file", nargs="?", help="the task template as JSON or YAML, or - for JSON on stdin")
    task_arguments(parser)


@command(
    "add",
    "add or replace a schedule; each firing submits task NAME-<UTC time>",
    _add_arguments,
    json_out=True,
)
async def add_schedule(args: argparse.Namespace) -> int:
    template = _template(args)
    return await show_one(args, lambda board: board.schedule(args.name, args.when, template), schedules_table)


def _template(args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        template = document(args.file)
        if not isinstance(template, dict):
            raise InvalidSchedule(f"{args.file}: the template must be one task (a mapping)")
        return template
    if args.kind:
        return task_from_flags(args)
    raise UsageError("give the task template as a file, or at least --kind")


@command("ls", "list the schedules", json_out=True, creates=False)
async def list_schedules(args: argparse.Namespace) -> int:
    await show(args, lambda board: board.schedules(), schedules_table)
    return 0


def _name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="schedule name")


@command("rm", "remove a schedule (the tasks it submitted stay)", _name)
async def remove_schedule(args: argparse.Namespace) -> int:
    return await removing(args, lambda board: board.unschedule(args.name), f"removed schedule {args.name}")


SCHEDULE = Group(
    "schedule",
    "tasks the NATS server submits on a schedule: add, ls, rm",
    (add_schedule, list_schedules, remove_schedule),
)
