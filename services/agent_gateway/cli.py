"""ants-agent-gateway: present the board's routes as agents of the Synadia Agent Protocol for NATS
(v0.3). Each prompt becomes a task for the swarm, and the caller's stream follows it: its id, its
progress, its result. Without --route, every route on the board is presented while a live agent
can take its prompts."""

from __future__ import annotations

import argparse

from ants_nats import TaskBoard

from .. import _common
from .gateway import DEFAULT_AGENT, DEFAULT_OWNER, AgentGateway
from .routes import DEFAULT_KIND, RouteSpec


async def _main(args: argparse.Namespace) -> None:
    secret = _common.seed(args)
    routes = [RouteSpec.parse(text, kind=args.kind) for text in args.route] or None
    async with (
        TaskBoard.connect(args.server, name=args.name, seed=secret, js_domain=args.js_domain) as board,
        AgentGateway(
            board,
            routes=routes,
            kind=args.kind,
            agent=args.agent,
            owner=args.owner,
            name=args.name,
            heartbeat_interval=args.heartbeat_interval,
            max_prompts=args.max_prompts,
            max_wait=args.max_wait,
        ) as gateway,
    ):
        print(
            f"ants-agent-gateway: {', '.join(sorted(gateway.presented)) or 'every route'} "
            f"as agents.prompt.{args.agent}.{args.owner}.<route>",
            flush=True,
        )
        await gateway.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-agent-gateway``."""
    p = _common.parser("ants-agent-gateway", __doc__ or "")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="[NAME:]CAP[,CAP...]",
        help="a route to present, always (repeatable; 'any' requires nothing); default: every route "
        "on the board while a live agent can take its prompts",
    )
    p.add_argument("--kind", default=DEFAULT_KIND, help=f"kind of the tasks prompts become ({DEFAULT_KIND})")
    p.add_argument(
        "--agent", default=DEFAULT_AGENT, help=f"the agent token of the subjects ({DEFAULT_AGENT})"
    )
    p.add_argument(
        "--owner", default=DEFAULT_OWNER, help=f"the owner token of the subjects ({DEFAULT_OWNER})"
    )
    p.add_argument("--name", default="agent-gateway", help="who the tasks say created them (the user's id)")
    p.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between heartbeats (30)")
    p.add_argument("--max-prompts", type=int, default=256, help="prompts followed at once per route (256)")
    p.add_argument(
        "--max-wait", type=float, default=3600.0, help="seconds a prompt follows its task at most (3600)"
    )
    return _common.run(p.parse_args(argv), _main)
