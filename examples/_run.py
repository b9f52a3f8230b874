"""What every example shares: the command line (``--server URL``, else an embedded nats-server
started for the run) and quiet logging (the library's warnings go to stderr)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from ants_nats import EmbeddedServer, configure_logging


def run(main: Callable[[str], Awaitable[int]], description: str | None) -> None:
    """Parse the command line, run ``main`` with a server URL, exit with what it returns."""
    configure_logging(level="WARNING")
    parser = argparse.ArgumentParser(description=(description or "").splitlines()[0])
    parser.add_argument("--server", help="NATS URL (default: start an embedded nats-server)")
    raise SystemExit(asyncio.run(_on_a_server(main, parser.parse_args().server)))


async def _on_a_server(main: Callable[[str], Awaitable[int]], server: str | None) -> int:
    if server:
        return await main(server)
    async with EmbeddedServer() as embedded:
        print(f"embedded nats-server at {embedded.url}")
        return await main(embedded.url)
