"""``ants-nats mcp``: the board served to MCP clients (the official ``mcp`` SDK), over stdio or
Streamable HTTP, so an LLM agent can take part in the swarm from any MCP client.

This module stays light (no SDK import) so that the command line can define its arguments without
paying for the SDK; ``run`` imports it when the server actually starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from ants_nats import BoardConfig
from ants_nats._aio import stopping_on_signals
from ants_nats.log import get_logger
from ants_nats.options import port_number

log = get_logger("mcp")

DEFAULT_HTTP_PORT = 8000
Transport = Literal["stdio", "http"]
_STOP_GRACE_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ants-nats mcp`` (all but ``--server``, which every command has)."""
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="with --transport http (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_HTTP_PORT, help="with --transport http")
    parser.add_argument(
        "--cap", action="append", default=[], help="host an agent with this capability (repeatable)"
    )
    parser.add_argument("--kind", action="append", default=None, help="task kinds it takes (default: any)")
    parser.add_argument("--name", default="mcp", help="the hosted agent's name")
    parser.add_argument("--capacity", type=int, default=1, help="tasks the model holds at once")
    parser.add_argument("--lease-ttl", type=float, default=BoardConfig.lease_ttl)
    parser.add_argument(
        "--pickup-timeout", type=float, default=60.0, help="seconds a claimed task waits for claim_next"
    )
    parser.add_argument(
        "--hold-timeout", type=float, default=3600.0, help="seconds the model may hold a task unsettled"
    )


async def serve(
    url: str,
    *,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = DEFAULT_HTTP_PORT,
    capabilities: Sequence[str] = (),
    kinds: Sequence[str] | None = None,
    name: str = "mcp",
    capacity: int = 1,
    lease_ttl: float = BoardConfig.lease_ttl,
    pickup_timeout: float = 60.0,
    hold_timeout: float | None = 3600.0,
    say: Callable[[str], None] | None = None,
) -> bool:
    """Serve the board at ``url`` over ``transport`` until the client leaves (stdio) or SIGINT/SIGTERM;
    True when a signal stopped it. Over HTTP, ``say`` hears the URL once the server listens.

    With ``capabilities`` the server hosts an agent that hands its tasks to the model; on exit it
    releases whatever the model left unsettled, so other agents take it at once.
    """
    # Imported here: the SDK (and its web stack) loads only when a server really starts.
    from ._server import McpHost  # noqa: PLC0415

    stop = asyncio.Event()
    with stopping_on_signals(stop.set):
        async with McpHost(
            url,
            name=name,
            capabilities=capabilities,
            capacity=capacity,
            kinds=kinds,
            lease_ttl=lease_ttl,
            pickup_timeout=pickup_timeout,
            hold_timeout=hold_timeout,
        ) as mcp_host:
            if transport == "http":
                await mcp_host.serve_http(host=host, port=port, stop=stop, say=say)
            else:
                await _until(mcp_host.serve_stdio(), stop)
    return stop.is_set()


async def _until(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``stop`` is set, whichever comes first."""
    task = asyncio.create_task(work, name="mcp:serve")
    stopper = asyncio.create_task(stop.wait(), name="mcp:stop")
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            pending.cancel()
        # The stdio transport reads stdin in a thread that no cancellation interrupts, so its task
        # may not end until the client writes or closes the pipe: wait briefly, then let the
        # cleanup go on (``run`` then leaves the process without waiting for that thread).
        _, stuck = await asyncio.wait({task, stopper}, timeout=_STOP_GRACE_S)
        if stuck:
            log.info("mcp.stdin_reader_left_blocked")
    failure = None if not task.done() or task.cancelled() else task.exception()
    if failure is not None:
        raise failure


async def run(args: argparse.Namespace) -> int:
    """``ants-nats mcp``: serve with the parsed ``args`` (those of ``add_arguments`` and ``--server``)."""
    signalled = await serve(
        args.server,
        transport=args.transport,
        host=args.host,
        port=args.port,
        capabilities=args.cap,
        kinds=args.kind,
        name=args.name,
        capacity=args.capacity,
        lease_ttl=args.lease_ttl,
        pickup_timeout=args.pickup_timeout,
        hold_timeout=args.hold_timeout,
        say=_say,
    )
    if signalled and args.transport == "stdio":
        # The SDK reads stdin in a worker thread that no signal interrupts, and the interpreter
        # would wait for it at exit until the client writes a line or closes the pipe. Everything
        # is released and closed by now, so the process leaves without waiting for that thread.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _say(line: str) -> None:
    # On stderr: with the stdio transport, stdout carries the protocol alone.
    sys.stderr.write(f"ants-nats mcp: {line}\n")


__all__ = ["add_arguments", "run", "serve"]
