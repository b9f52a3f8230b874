"""The command-line options every process that reaches a board takes: where the server is, which
JetStream domain holds the board, and whose credentials to connect with; and how it logs. The
CLI's commands and the services in ``services/`` add them the same way."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from .identity import creds_from_env

DEFAULT_URL = "nats://127.0.0.1:4222"


class OneLineErrors(argparse.ArgumentParser):
    """A parser whose argument errors are one line (``<program>: error: ...``, no usage dump) and
    exit status 2, as every other error of a command."""

    def error(self, message: str) -> NoReturn:
        program = self.prog.split()[0]  # (a subcommand's parser is "ants-nats <command>")
        self.exit(2, f"{program}: error: {message} (see {self.prog} --help)\n")


def port_number(given: str) -> int:
    """A ``--port``-like flag's value: 0 (any free port) to 65535, or a one-line refusal."""
    try:
        port = int(given)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{given!r} is no port: give 1-65535, or 0 for any free one")
    return port


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(given: str) -> str:
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(given.upper(), given.upper())
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"{given!r} is no log level: give one of {', '.join(LEVELS)}")
    return level


def logging_options(parser: argparse.ArgumentParser, *, default: str) -> None:
    """Add ``--log-level`` (``default`` unless ``$ANTS_LOG_LEVEL`` says another; either is checked)
    and ``--json-logs`` to ``parser``."""
    parser.add_argument(
        "--log-level",
        type=_level,
        default=os.environ.get("ANTS_LOG_LEVEL") or default,  # (set but empty: not set)
        help=f"least level logged to stderr: {', '.join(LEVELS)} (default $ANTS_LOG_LEVEL, else {default})",
    )
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines to stderr")


def connection_options(parser: argparse.ArgumentParser, *, credentials: bool = True) -> None:
    """Add ``--server``, ``--js-domain`` and (with ``credentials``) ``--creds`` to ``parser``."""
    parser.add_argument(
        "--server",
        default=os.environ.get("ANTS_NATS_URL", DEFAULT_URL),
        help=f"NATS URL (default: $ANTS_NATS_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--js-domain",
        metavar="DOMAIN",
        default=os.environ.get("ANTS_NATS_JS_DOMAIN") or None,
        help="the JetStream domain the board lives in, when --server is a site's leaf node "
        "and the board is on the hub (default $ANTS_NATS_JS_DOMAIN)",
    )
    if credentials:
        parser.add_argument(
            "--creds",
            "--seed-file",
            dest="seed_file",
            metavar="FILE",
            type=Path,
            default=creds_from_env(),
            help="connect as the user of this credentials file: an nkeys seed (ants-nats config "
            "writes one per user) or a .creds file's seed; default $ANTS_NATS_CREDS "
            "(--seed-file and $ANTS_NATS_SEED_FILE are the older names)",
        )
