"""How commands print what they read or did: a table for people, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pydantic

from ..board import TaskBoard
from ..models import TaskRecord
from ..views import tasks_table
from ..waiting import Waiting, why_waiting_many
from .command import connect

Row = TypeVar("Row", bound=pydantic.BaseModel)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


async def show(
    args: argparse.Namespace,
    read: Callable[[TaskBoard], Awaitable[Sequence[Row]]],
    render: Callable[[Sequence[Row]], str],
) -> Sequence[Row]:
    """Read rows from the board and print them as a table, or as JSON with ``--json``."""
    async with connect(args) as board:
        rows = await read(board)
    if args.json:
        emit_json([row.model_dump(mode="json") for row in rows])
    else:
        print(render(rows))
    return rows


async def show_tasks(
    args: argparse.Namespace,
    read: Callable[[TaskBoard], Awaitable[Sequence[TaskRecord]]],
    *,
    single: bool = False,
) -> Sequence[TaskRecord]:
    """Read task records from the board and print them as ``show`` does, each unfinished one with
    why it waits (the table's NOTE; with ``--json`` a ``waiting`` object, null once finished).
    JSON is an array, or for a ``single`` thing (``get ID``) that one object."""
    async with connect(args) as board:
        records = await read(board)
        waiting = await why_waiting_many(board, records)
    if args.json:
        shown = [_with_waiting(r, waiting.get(r.task.id)) for r in records]
        emit_json(shown[0] if single and len(shown) == 1 else shown)
    else:
        print(tasks_table(records, waiting))
    return records


def _with_waiting(record: TaskRecord, waiting: Waiting | None) -> dict[str, Any]:
    shown = None if waiting is None else waiting.model_dump(mode="json")
    return {**record.model_dump(mode="json"), "waiting": shown}


def _one(act: Callable[[TaskBoard], Awaitable[Row]]) -> Callable[[TaskBoard], Awaitable[list[Row]]]:
    """A reading of the one row ``act`` returns."""

    async def read(board: TaskBoard) -> list[Row]:
        return [await act(board)]

    return read


async def show_task(args: argparse.Namespace, act: Callable[[TaskBoard], Awaitable[TaskRecord]]) -> int:
    """Do ``act`` on the board and print the one task record it returns, as ``show_tasks`` does
    (with ``--json``, as one object)."""
    await show_tasks(args, _one(act), single=True)
    return 0


async def show_one(
    args: argparse.Namespace,
    act: Callable[[TaskBoard], Awaitable[Row]],
    render: Callable[[Sequence[Row]], str],
) -> int:
    """Do ``act`` on the board and print the one row it returns, as ``show`` does."""
    await show(args, _one(act), render)
    return 0


async def removing(
    args: argparse.Namespace, remove: Callable[[TaskBoard], Awaitable[None]], said: str
) -> int:
    """Run a command that removes something from the board, then say so."""
    async with connect(args) as board:
        await remove(board)
    print(said)
    return 0
