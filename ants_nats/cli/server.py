"""``ants-nats server``: an embedded JetStream server for other processes, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .._aio import stopping_on_signals
from ..server import EmbeddedServer
from .command import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
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
