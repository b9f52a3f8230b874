"""``ants-nats dashboard``: the live, read-only web dashboard of the swarm."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dashboard import run_dashboard
from ..options import port_number
from .command import command, seed_of


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=0, help="HTTP port (default: a free one)")
    # (--seed, the name this command gave the credentials first, kept as an alias for a release.)
    parser.add_argument("--seed", type=Path, dest="seed_file", help=argparse.SUPPRESS)


@command("dashboard", "serve a live, read-only web dashboard of the swarm on 127.0.0.1", _arguments)
async def dashboard(args: argparse.Namespace) -> int:
    return await run_dashboard(
        args.server, port=args.port, seed=seed_of(args), say=lambda line: print(line, flush=True)
    )
