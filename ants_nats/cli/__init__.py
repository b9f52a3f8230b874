"""The ``ants-nats`` command line.

Every command that talks to NATS takes ``--server URL`` (default ``$ANTS_NATS_URL``, else
``nats://127.0.0.1:4222``); reading commands take ``--json``. Bad input or an unreachable server is
one line on stderr and exit status 2, never a traceback.

Each command lives in its family's module (``tasks``, ``schedules``, ``spending``, ``swarm`` ...),
its arguments beside its run function (see ``command``); this module lists them, parses, and turns
errors into exit statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import pydantic

from .. import __version__
from ..errors import AntsError
from ..log import configure_logging
from ..mcp import add_arguments as add_mcp_arguments
from ..mcp import run as run_mcp
from ..options import OneLineErrors, logging_options
from . import spending, swarm, tasks
from .access import config
from .agent import agent
from .command import Command, Group, Run
from .dashboard import dashboard
from .demo import demo
from .schedules import SCHEDULE
from .server import server

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

COMMANDS: tuple[Command | Group, ...] = (
    demo,
    server,
    agent,
    *tasks.COMMANDS,
    SCHEDULE,
    *spending.COMMANDS,
    *swarm.COMMANDS,
    Command(
        "mcp",
        "serve the board to MCP clients (stdio or Streamable HTTP)",
        run_mcp,
        add_mcp_arguments,
        credentials=False,
    ),
    dashboard,
    config,
)
"""Every ``ants-nats`` command, in the order ``--help`` lists them."""


def _parser(commands: Sequence[Command | Group]) -> argparse.ArgumentParser:
    # Typed as the base class, which its subparsers share (they are made of the same class).
    parser: argparse.ArgumentParser = OneLineErrors(
        prog="ants-nats", description="Leaderless work division on NATS JetStream."
    )
    parser.add_argument("--version", action="version", version=f"ants-nats {__version__}")
    logging_options(parser, default="WARNING")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        command.add_to(subcommands)
    return parser


def main(argv: list[str] | None = None, commands: Sequence[Command | Group] = COMMANDS) -> int:
    """Entry point of ``ants-nats``; returns the exit status. ``commands``: those it offers (the
    demo's agent processes run one of their own through here)."""
    args = _parser(commands).parse_args(argv)
    configure_logging(json=args.json_logs, level=args.log_level)
    run: Run = args.run  # set by the chosen command (``Command.add_to``)
    try:
        return asyncio.run(run(args))
    except BrokenPipeError:
        # The reader went away (``| head``): nothing is wrong, and nothing more is to be said.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TimeoutError as exc:  # before OSError, which it is a kind of
        said = f" ({exc})" if str(exc) else ""  # a board's wait names the tasks unfinished
        print(f"ants-nats: error: {args.command} did not finish in time{said}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (AntsError, OSError) as exc:
        print(f"ants-nats: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except pydantic.ValidationError as exc:
        print(f"ants-nats: error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ants-nats: interrupted, stopped cleanly", file=sys.stderr)
        return EXIT_INTERRUPTED
