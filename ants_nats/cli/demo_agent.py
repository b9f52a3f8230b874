"""One agent process of the demo swarm, as ``ants-nats demo`` starts it:
``python -m ants_nats.cli.demo_agent [--log-level L] agent --server URL --name N --cap C ...``.

The demo's unreliable (``--fail-rate``) and adversarial (``--abandon``) agents live here, apart from
``ants-nats agent``, whose agents do their work; this entry is no ``ants-nats`` command.
"""

from __future__ import annotations

import argparse
import sys

from ..demo import AgentSpec, agent_for
from . import main
from .agent import agent_arguments, agent_board
from .command import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    agent_arguments(parser)
    parser.add_argument(
        "--random-seed",
        "--seed",
        dest="seed",
        type=int,
        default=0,
        help="seed of its failures (--seed: older name)",
    )
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fail this share of tasks (unreliable)")
    parser.add_argument("--abandon", action="store_true", help="claim work and abandon it (adversarial)")


@command("agent", "run one agent of the demo swarm until SIGINT/SIGTERM", _arguments)
async def demo_agent(args: argparse.Namespace) -> int:
    spec = AgentSpec(args.name, tuple(args.cap), fail_rate=args.fail_rate, abandons=args.abandon)
    async with agent_board(args) as board, agent_for(board, spec, seed=args.seed) as agent:
        await agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(commands=(demo_agent,)))
