"""``ants-nats config``: a server configuration with access control, and a seed per user."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..access import server_config
from ..errors import UsageError
from ..identity import Identity
from .command import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", action="append", default=[], help="agent id (repeatable)")
    parser.add_argument("--observer", action="append", default=[], help="read-only user name (repeatable)")
    parser.add_argument(
        "--ledger", action="append", default=[], help="ledger service user, the only writer of the ledger"
    )
    parser.add_argument(
        "--operator", action="append", default=[], help="an agent that may also set rate limits and schedules"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for nats-server.conf and seeds")


@command("config", "generate a server configuration with one nkey user per agent", _arguments, server=False)
async def config(args: argparse.Namespace) -> int:
    roles = (args.agent, args.observer, args.ledger, args.operator)
    if not any(roles):
        raise UsageError("name at least one --agent, --observer or --ledger, or an --operator")
    identities = {name: Identity.generate() for members in roles for name in members}
    if len(identities) < sum(map(len, roles)):  # one user per name: its seed is its identity
        raise UsageError("a name was given twice: each user has one role (an operator is an agent already)")
    agents, observers, ledgers, operators = ({name: identities[name].public_key for name in m} for m in roles)
    text = server_config(agents, observers, ledgers, operators)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nats-server.conf").write_text(text)
    for name, identity in identities.items():
        seed_file = args.out / f"{name}.seed"
        seed_file.write_text(identity.seed + "\n")
        seed_file.chmod(0o600)
    print(f"wrote {args.out / 'nats-server.conf'} and {len(identities)} seed file(s) (mode 600)")
    for line in _how_to_run(args.out, args.agent, args.operator, args.ledger, args.observer):
        print(line)
    return 0


def _how_to_run(
    out: Path, agents: list[str], operators: list[str], ledgers: list[str], observers: list[str]
) -> list[str]:
    """The commands that start the server and each role, with the files just written."""

    def creds(name: str) -> str:
        return f"--creds {out / (name + '.seed')}"

    lines = [f"  nats-server -js -c {out / 'nats-server.conf'}    # the server (first)"]
    lines += [
        f"  ants-nats limit set CAP --per-minute N {creds(name)}    # the operator" for name in operators[:1]
    ]
    lines += [f"  ants-nats agent --name {name} --cap CAP {creds(name)}" for name in (*operators, *agents)]
    lines += [f"  ants-ledger {creds(name)}    # the ledger service" for name in ledgers]
    lines += [f"  ants-nats tasks {creds(name)}    # an observer reads" for name in observers]
    return ["then run (add --server URL where the server is not on 127.0.0.1:4222):", *lines]
