"""``ants-nats dashboard``: the live, read-only web dashboard of the swarm."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dashboard import run_dashboard
from ..identity import read_seed
from .command import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--seed", type=Path, default=None, help="nkeys seed file (an observer's will do)")


@command("dashboard", "serve a live, read-only web dashboard of the swarm on 127.0.0.1", _arguments)
async def dashboard(args: argparse.Namespace) -> int:
    seed = read_seed(args.seed) if args.seed else None
    return await run_dashboard(
        args.server, port=args.port, seed=seed, say=lambda line: print(line, flush=True)
    )
