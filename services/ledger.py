"""Ledger: projects the trail into per-agent history and reputation (bucket ``ants_ledger``),
leaving out events whose signature does not match their author's announced key.

Run several replicas if you like: each reads the whole trail in order, and whichever counts an event
first counts it once (entries are written by compare-and-set and remember the last event applied).
"""

from __future__ import annotations

import argparse
import sys

from ants_nats import Directory, Trail, Verifier, connect
from ants_nats.ledger import Ledger

from . import _common


async def _main(args: argparse.Namespace) -> None:
    async with connect(args.server, name="ledger", seed=_common.seed(args), js_domain=args.js_domain) as nc:
        verifier = Verifier(Directory(nc))
        await Ledger(nc).project(await Trail.open(nc), durable=args.durable, verifier=verifier)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-ledger``."""
    p = _common.parser("ants-ledger", __doc__ or "")
    p.add_argument(
        "--durable",
        default="ledger",
        help="the projection's name, under which it keeps its position (a new one replays all)",
    )
    return _common.run(p.parse_args(argv), _main)


if __name__ == "__main__":
    sys.exit(main())
