"""What every service process shares: arguments, logging, signals, and clean error exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

from ants_nats import (
    AntsError,
    OneLineErrors,
    configure_logging,
    connection_options,
    logging_options,
    read_seed,
    without_credentials,
)
from ants_nats.log import get_logger

EXIT_BAD_INPUT = 2

log = get_logger("service")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every service takes."""
    # The module's docstring as written (its paragraphs kept, its reST quotes made plain).
    p = OneLineErrors(
        prog=prog,
        description=description.replace("``", "'"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(p)
    logging_options(p, default="INFO")
    p.set_defaults(prog=prog)  # errors name the service, not the path it was started by
    return p


def seed(args: argparse.Namespace) -> str | None:
    """The nkeys seed named by ``--seed-file``, if any."""
    return read_seed(args.seed_file) if args.seed_file else None


async def until_signalled(work: Awaitable[None]) -> None:
    """Run ``work`` until it returns or SIGINT/SIGTERM arrives (then cancel it cleanly)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace, main: Callable[[argparse.Namespace], Awaitable[None]]) -> int:
    """Configure logging, run ``main(args)`` until done or signalled; AntsError -> message, exit 2."""
    configure_logging(json=args.json_logs, level=args.log_level)
    # A sign it runs, at INFO (its default); the server named without credentials.
    log.info("service.starting", service=args.prog, server=without_credentials(args.server))
    try:
        asyncio.run(until_signalled(main(args)))
    except AntsError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    log.info("service.stopped", service=args.prog)
    return 0
