"""The ``ants-nats`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from . import __version__
from .access import server_config
from .demo import SWARM, DemoSummary, run_demo
from .errors import AntsError
from .identity import Identity
from .log import configure_logging
from .models import TaskRecord
from .server import EmbeddedServer

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ants-nats", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ants-nats {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("ANTS_LOG_LEVEL", "WARNING"))
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a demo swarm on an embedded server and report")
    demo.add_argument("--documents", type=int, default=8, help="documents in the pipeline (default 8)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the unreliable agent's failures")
    demo.add_argument("--server", default=os.environ.get("ANTS_NATS_URL"), help="use this server instead")

    config = sub.add_parser("config", help="generate a server configuration with one nkey user per agent")
    config.add_argument("--agent", action="append", default=[], help="agent id (repeatable)")
    config.add_argument("--observer", action="append", default=[], help="read-only user name (repeatable)")
    config.add_argument("--out", type=Path, required=True, help="directory for nats-server.conf and seeds")

    server = sub.add_parser("server", help="run an embedded JetStream server until Ctrl-C")
    server.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    server.add_argument("--store", type=Path, default=None, help="JetStream store directory")
    return parser


def _progress(done: int, total: int, record: TaskRecord) -> None:
    width = 30
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    tries = len(record.attempts)
    print(f"[{bar}] {done:3d}/{total}  {record.status.value:6s} {record.task.id} ({tries} attempt(s))")


def _report(summary: DemoSummary) -> None:
    total = len(summary.records)
    print(
        f"\n{total} tasks in {summary.seconds:.1f}s: "
        + ", ".join(f"{n} {s}" for s, n in summary.by_status.items())
    )
    print(f"retries: {summary.retries}")
    print("work by agent:")
    for agent, n in sorted(summary.work_by_agent.items()):
        print(f"  {agent:28s} {n:3d}")


async def _demo(args: argparse.Namespace) -> int:
    if args.documents < 1:
        raise AntsError("--documents must be at least 1")
    print(f"ants-nats demo: {len(SWARM)} agents, {args.documents * 3 + 1} tasks")
    if args.server:
        summary = await run_demo(args.server, documents=args.documents, seed=args.seed, progress=_progress)
    else:
        async with EmbeddedServer() as server:
            print(f"embedded JetStream server at {server.url}")
            summary = await run_demo(server.url, documents=args.documents, seed=args.seed, progress=_progress)
    _report(summary)
    return 0 if summary.by_status.get("done", 0) == len(summary.records) else 1


async def _config(args: argparse.Namespace) -> int:
    if not args.agent and not args.observer:
        raise AntsError("name at least one --agent or --observer")
    identities = {name: Identity.generate() for name in [*args.agent, *args.observer]}
    text = server_config(
        {a: identities[a].public_key for a in args.agent},
        {o: identities[o].public_key for o in args.observer},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nats-server.conf").write_text(text)
    for name, identity in identities.items():
        seed_file = args.out / f"{name}.seed"
        seed_file.write_text(identity.seed + "\n")
        seed_file.chmod(0o600)
    print(f"wrote {args.out / 'nats-server.conf'} and {len(identities)} seed file(s) (mode 600)")
    print("start: nats-server -js -c nats-server.conf; connect each agent with its seed")
    return 0


async def _server(args: argparse.Namespace) -> int:
    async with EmbeddedServer(store_dir=args.store, port=args.port) as server:
        print(f"nats-server with JetStream at {server.url} (store {server.store_dir}); Ctrl-C stops it")
        sys.stdout.flush()
        await asyncio.Event().wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-nats``; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(json=args.json_logs, level=args.log_level)
    command = {"demo": _demo, "server": _server, "config": _config}[args.command]
    try:
        return asyncio.run(command(args))
    except AntsError as exc:
        print(f"ants-nats: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ants-nats: interrupted, stopped cleanly", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
