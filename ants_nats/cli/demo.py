"""``ants-nats demo``: the demo swarm on an embedded server (or a given one), then its report."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from .._aio import interruptible, stopping_on_signals
from ..board import BoardConfig, TaskBoard
from ..dashboard import Dashboard
from ..demo import BYTES_PER_TOKEN, SWARM, DemoSummary, Traffic, run_demo
from ..errors import UsageError
from ..models import utcnow
from ..server import EmbeddedServer, monitor_json
from ..views import reputation_table
from .command import command

DEMO_DEADLINE_S = 55.0
"""The demo promises to finish within a minute; past this it stops with an error."""

Run = Callable[[str, Traffic | None], Awaitable[DemoSummary]]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--documents", type=int, default=8, help="documents in the pipeline (default 8)")
    parser.add_argument(
        "--random-seed",
        "--seed",
        dest="seed",
        type=int,
        default=7,
        help="seed of the unreliable agent's failures (--seed: its older name, not a credential)",
    )
    parser.add_argument(
        "--server",
        help="use the board on this server instead of an embedded one (default: $ANTS_NATS_URL, when set)",
    )
    parser.add_argument("--dashboard", action="store_true", help="serve the live dashboard; stay up after")


# Its own --server, defaulting to none: then the demo starts a server of its own.
@command(
    "demo",
    "run a demo swarm on an embedded server (or --server, $ANTS_NATS_URL) and report",
    _arguments,
    server=False,
)
async def demo(args: argparse.Namespace) -> int:
    if args.documents < 1:
        raise UsageError("--documents must be at least 1")
    print(f"ants-nats demo: {len(SWARM)} agent processes, {args.documents * 3 + 1} tasks")

    async def run(url: str, traffic: Traffic | None) -> DemoSummary:
        async with AsyncExitStack() as stack:
            if args.dashboard:
                board = await stack.enter_async_context(TaskBoard.connect(url, name="ants-nats-dashboard"))
                dashboard = await stack.enter_async_context(Dashboard(board))
                print(f"dashboard at {dashboard.url}", flush=True)
            async with asyncio.timeout(DEMO_DEADLINE_S):
                summary = await run_demo(
                    url, documents=args.documents, seed=args.seed, say=print, traffic=traffic
                )
            _report(summary)
            if args.dashboard:
                stop = asyncio.Event()
                with stopping_on_signals(stop.set):  # listening before saying so
                    print(f"\nthe dashboard stays up at {dashboard.url}; Ctrl-C stops it", flush=True)
                    await stop.wait()
        return summary

    # Ctrl-C stops the demo for good (its processes included) and exits 130, whatever it was doing.
    summary = await interruptible(_run_somewhere(args, run))
    return 0 if summary.by_status.get("done", 0) == len(summary.records) else 1


async def _run_somewhere(args: argparse.Namespace, run: Run) -> DemoSummary:
    url = args.server or os.environ.get("ANTS_NATS_URL")
    if url:
        print(f"on the server at {url}{'' if args.server else ' (from $ANTS_NATS_URL)'}")
        return await run(url, None)
    async with EmbeddedServer() as server:
        print(f"embedded JetStream server at {server.url}")

        async def traffic() -> tuple[int, int]:
            varz = await monitor_json(server.monitor_port, "/varz")
            return int(varz["in_msgs"]) + int(varz["out_msgs"]), int(varz["in_bytes"]) + int(
                varz["out_bytes"]
            )

        return await run(server.url, traffic)


def _report(summary: DemoSummary) -> None:
    total = len(summary.records)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.by_status.items()))
    print(f"\n{total} tasks in {summary.seconds:.1f}s: {statuses}; {summary.retries} redone")
    print("\nwork done by agent:")
    for agent, n in sorted(summary.work_by_agent.items()):
        print(f"  {agent:28s} {n:3d}")
    print("\nreputation:")
    print(reputation_table(summary.ledgers, utcnow(), BoardConfig().reputation.half_life))
    if summary.messages is not None and summary.bytes is not None and total:
        print(
            f"\ncoordination: {summary.messages / total:.1f} messages and "
            f"{summary.bytes / total / 1024:.1f} KiB through the server per task"
        )
    usage, share = summary.usage, summary.coordination_share
    if usage:
        print(f"work: {usage.tokens_in} tokens in and {usage.tokens_out} out, as the handlers reported them")
    if share is not None:
        print(
            f"coordination's share: {share:.1%} of all units "
            f"(its bytes counted as tokens of {BYTES_PER_TOKEN} bytes each)"
        )
