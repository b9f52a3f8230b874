"""A command of ``ants-nats``: its name and help, its own arguments beside its run function, and the
shared options it takes (``--server``, ``--json``).

A command is declared once, in its family's module, as its run function decorated with ``@command``
and its arguments just above it; the package's ``COMMANDS`` only lists them. Adding a flag is one
line in those arguments, read by the run function below them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

from ..board import BoardConfig, TaskBoard
from ..errors import UsageError
from ..identity import Identity, read_seed
from ..options import connection_options

Run = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
"""What a command does with its parsed arguments; returns the exit status."""
Arguments = Callable[[argparse.ArgumentParser], None]
# Quoted: the class is generic to type checkers only.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a command that takes the shared options alone."""


@dataclass(frozen=True)
class Command:
    """One command. ``server``: it talks to NATS (``--server URL``), as the user of
    ``--seed-file`` if given (``credentials``); ``json_out``: it prints what it read, as JSON with
    ``--json``."""

    name: str
    text: str
    run: Run
    arguments: Arguments = no_arguments
    server: bool = True
    json_out: bool = False
    credentials: bool = True
    creates: bool = True
    """Whether it may set the board up (a reading command creates nothing: an observer may run it)."""

    def add_to(self, subcommands: Subcommands) -> None:
        parser = subcommands.add_parser(self.name, help=self.text, description=self.text)
        if self.server:
            connection_options(parser, credentials=self.credentials)
        if self.server and self.credentials:
            parser.add_argument(
                "--as",
                dest="acting_as",
                metavar="NAME",
                default=os.environ.get("ANTS_NATS_AS") or None,
                help="with --seed-file: the name its key signs as on a signed board (created_by of "
                "submitted tasks; who cancels or retries; default $ANTS_NATS_AS)",
            )
            if self.creates:  # (a reading command sets no board up: nothing to sign)
                parser.add_argument(
                    "--signed",
                    action="store_true",
                    help="create the board signed, if this command creates it (see docs/concepts/trust.md)",
                )
        if self.json_out:
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        self.arguments(parser)
        parser.set_defaults(run=self.run, creates=self.creates)


def command(
    name: str,
    text: str,
    arguments: Arguments = no_arguments,
    *,
    server: bool = True,
    json_out: bool = False,
    creates: bool = True,
) -> Callable[[Run], Command]:
    """Declare the decorated run function as command ``name``, with its help and its arguments
    (``creates=False``: it only reads, and sets up no board)."""

    def declare(run: Run) -> Command:
        return Command(name, text, run, arguments, server=server, json_out=json_out, creates=creates)

    return declare


@dataclass(frozen=True)
class Group:
    """A command made of subcommands, such as ``schedule add|ls|rm``."""

    name: str
    text: str
    commands: tuple[Command, ...]

    def add_to(self, subcommands: Subcommands) -> None:
        parser = subcommands.add_parser(self.name, help=self.text, description=self.text)
        under = parser.add_subparsers(dest=f"{self.name}_command", required=True)
        for command in self.commands:
            command.add_to(under)


def seed_of(args: argparse.Namespace) -> str | None:
    """The seed of ``--seed-file``, if one was given."""
    return read_seed(Path(args.seed_file)) if args.seed_file else None


@asynccontextmanager
async def connect(args: argparse.Namespace, config: BoardConfig | None = None) -> AsyncIterator[TaskBoard]:
    """The board at ``--server``, as the command line connects to it (as ``--seed-file``'s user,
    signing as ``--as``; creating it signed with ``--signed``)."""
    config = config or BoardConfig()
    if getattr(args, "signed", False):
        config = replace(config, signed=True)
    seed = seed_of(args)
    creates = getattr(args, "creates", True)
    async with TaskBoard.connect(
        args.server, config, name="ants-nats-cli", seed=seed, create=creates, js_domain=args.js_domain
    ) as board:
        acting_as = getattr(args, "acting_as", None)
        if acting_as is not None:
            if seed is None:
                raise UsageError("--as NAME signs with the key of --seed-file: give one")
            board.sign_as(acting_as, Identity.from_seed(seed))
        yield board
