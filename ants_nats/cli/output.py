"""How commands print what they read or did: a table for people, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pydantic

from ..board import TaskBoard
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


async def show_one(
    args: argparse.Namespace,
    act: Callable[[TaskBoard], Awaitable[Row]],
    render: Callable[[Sequence[Row]], str],
) -> int:
    """Do ``act`` on the board and print the one row it returns, as ``show`` does."""

    async def read(board: TaskBoard) -> list[Row]:
        return [await act(board)]

    await show(args, read, render)
    return 0


async def removing(
    args: argparse.Namespace, remove: Callable[[TaskBoard], Awaitable[None]], said: str
) -> int:
    """Run a command that removes something from the board, then say so."""
    async with connect(args) as board:
        await remove(board)
    print(said)
    return 0
