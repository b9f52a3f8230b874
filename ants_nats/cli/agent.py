"""``ants-nats agent``: one agent process, serving kind ``echo``, the demo's kinds (``--demo``), and
``prompt`` tasks through a Synadia Agent Protocol agent (``--via-agent-protocol``), until SIGINT or
SIGTERM. It does its work honestly: the demo's unreliable and abandoning agents are
``demo_agent``'s."""

from __future__ import annotations

import argparse
from contextlib import AbstractAsyncContextManager

from pydantic import JsonValue

from ..agent import Agent
from ..agent_protocol import via_agent_protocol
from ..board import BoardConfig, TaskBoard
from ..context import Handler, TaskContext
from ..demo import HANDLERS
from ..identity import Identity
from ..models import Task
from ..names import ID_RULE, is_valid_id
from ..options import port_number
from .command import command, seed_of

SHUTDOWN_GRACE_S = 2.0
"""How long a stopped agent lets running handlers finish before handing their tasks back, so that
Ctrl-C or SIGTERM is answered within seconds: well inside the 10 s ``docker stop`` waits before it kills."""


def _name(given: str) -> str:
    # Refused before connecting: bad input is a message whether or not a server answers.
    if not is_valid_id(f"{given}-00000000"):
        raise argparse.ArgumentTypeError(f"{given!r} is no agent name: use {ID_RULE} (its id adds 9)")
    return given


def agent_arguments(parser: argparse.ArgumentParser) -> None:
    """Who an agent process is and how long its claims last (read by ``agent_board``); the demo's
    agents take them too."""
    parser.add_argument(
        "--name",
        type=_name,
        default="agent",
        help="its name; with --seed-file its id too, the user's name in ants-nats config "
        "(default: %(default)s)",
    )
    parser.add_argument("--cap", action="append", default=[], help="a capability (repeatable)")
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=BoardConfig.lease_ttl,
        metavar="S",
        help="seconds a claim lives without a heartbeat (default: %(default)s)",
    )


def agent_board(args: argparse.Namespace) -> AbstractAsyncContextManager[TaskBoard]:
    """The board an agent process works on, connected under its name (as ``--seed-file``'s user)."""
    config = BoardConfig(lease_ttl=args.lease_ttl, signed=args.signed)
    return TaskBoard.connect(
        args.server, config, name=args.name, seed=seed_of(args), js_domain=args.js_domain
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    agent_arguments(parser)
    parser.add_argument(
        "--capacity", type=int, default=2, metavar="N", help="tasks it runs at once (default: %(default)s)"
    )
    parser.add_argument("--demo", action="store_true", help="handle the demo pipeline's task kinds")
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="P",
        help="serve Prometheus metrics on 127.0.0.1:P/metrics (0: a free port, printed)",
    )
    parser.add_argument(
        "--via-agent-protocol",
        metavar="AGENT",
        help="handle 'prompt' tasks by prompting this Synadia Agent Protocol agent (agent[.owner[.name]])",
    )


@command("agent", "run one agent until SIGINT/SIGTERM", _arguments)
async def agent(args: argparse.Namespace) -> int:
    seed = seed_of(args)
    async with agent_board(args) as board:
        ant = Agent(
            board,
            name=args.name,
            capabilities=args.cap,
            capacity=args.capacity,
            shutdown_grace=SHUTDOWN_GRACE_S,
            metrics_port=args.metrics_port,
            # With --seed-file the agent is that user: its id is the user's name (--name) in the
            # access-control configuration, and it signs with the seed's key.
            agent_id=args.name if seed is not None else None,
            identity=None if seed is None else Identity.from_seed(seed),
        )
        handlers: dict[str, Handler] = HANDLERS if args.demo else {"echo": _echo}
        if args.via_agent_protocol:
            handlers = {**handlers, "prompt": via_agent_protocol(board.nc, args.via_agent_protocol)}
        for kind, handler in handlers.items():
            ant.handler(kind)(handler)
        async with ant:
            print(f"agent {ant.id} serving {', '.join(sorted(ant.capabilities)) or 'anything'}", flush=True)
            if ant.metrics_url is not None:
                print(f"metrics at {ant.metrics_url}", flush=True)
            await ant.run()
    return 0


async def _echo(task: Task, ctx: TaskContext) -> JsonValue:
    return task.payload
