"""``ants-nats server``: an embedded JetStream server for other processes, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .._aio import stopping_on_signals
from ..options import port_number
from ..server import EmbeddedServer
from .command import command

DEFAULT_PORT = 4222
"""NATS's own port: where every client (and ``--server``'s default) looks first."""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=port_number,
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
