"""``ants-nats server``: an embedded JetStream server for other processes, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .._aio import stopping_on_signals
from ..server import EmbeddedServer
from .command import command

DEFAULT_PORT = 4222
"""NATS's own port: where every client (and ``--server``'s default) looks first."""


def _port(given: str) -> int:
    try:
        port = int(given)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{given!r} is no port: give 1-65535, or 0 for any free one")
    return port


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"client port (default {DEFAULT_PORT}, NATS's own; 0: any free one)",
    )
    parser.add_argument("--store", type=Path, default=None, help="JetStream store directory")


@command("server", "run an embedded JetStream server until Ctrl-C", _arguments, server=False)
async def server(args: argparse.Namespace) -> int:
    # SIGTERM (systemd, docker stop) stops it as Ctrl-C does: the child server and its temporary
    # store go with it. Listening before the server starts: a signal may come once it is announced.
    stop = asyncio.Event()
    with stopping_on_signals(stop.set):
        async with EmbeddedServer(store_dir=args.store, port=args.port) as embedded:
            print(
                f"nats-server with JetStream at {embedded.url} (store {embedded.store_dir}); Ctrl-C stops it",
                flush=True,
            )
            await stop.wait()
    return 0
