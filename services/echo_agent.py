"""A generic worker agent configured on the command line: it handles the given task kinds by
echoing the payload back as the result. Handy for demos, smoke tests and compose files."""

from __future__ import annotations

import argparse
import sys

from pydantic import JsonValue

from ants_nats import Agent, Identity, Task, TaskBoard, TaskContext

from . import _common


async def echo(task: Task, ctx: TaskContext) -> JsonValue:
    """The result of an echo task is its payload."""
    return task.payload


async def _main(args: argparse.Namespace) -> None:
    secret = _common.seed(args)
    async with TaskBoard.connect(
        args.server, name=f"echo-{args.name}", seed=secret, js_domain=args.js_domain
    ) as board:
        identity = Identity.from_seed(secret) if secret else None
        agent_id = args.name if secret else None  # under access control the id is the user's
        agent = Agent(
            board,
            name=args.name,
            agent_id=agent_id,
            identity=identity,
            capabilities=args.cap,
            capacity=args.capacity,
        )
        for kind in args.kind or ["echo"]:
            agent.handler(kind)(echo)
        async with agent:
            await agent.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-echo-agent``."""
    p = _common.parser("ants-echo-agent", __doc__ or "")
    p.add_argument("--name", default="echo")
    p.add_argument("--cap", action="append", default=[], help="a capability (repeatable)")
    p.add_argument("--kind", action="append", help="a task kind to handle (repeatable; default: echo)")
    p.add_argument("--capacity", type=int, default=1)
    return _common.run(p.parse_args(argv), _main)


if __name__ == "__main__":
    sys.exit(main())
