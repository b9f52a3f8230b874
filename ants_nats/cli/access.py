"""``ants-nats config``: a server configuration with access control, and a seed per user."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..access import bazaar_config, owned_agent_id, server_config
from ..errors import UsageError
from ..identity import Identity
from .command import command

_BOARD_FOLDER = "board"
"""In a bazaar, where the seeds of the board's users (ledger, operators, observers) go."""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", action="append", default=[], help="agent id (repeatable)")
    parser.add_argument("--observer", action="append", default=[], help="read-only user name (repeatable)")
    parser.add_argument(
        "--ledger", action="append", default=[], help="ledger service user, the only writer of the ledger"
    )
    parser.add_argument(
        "--operator", action="append", default=[], help="an agent that may also set rate limits and schedules"
    )
    parser.add_argument(
        "--owner",
        action="append",
        default=[],
        metavar="OWNER=NAME[,NAME...]",
        help="a bazaar: an owner and its agents, in an account of its own (repeatable; agent ids "
        "become OWNER-NAME, seeds go to OUT/OWNER/; the ledger, operators and observers hold the board)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for nats-server.conf and seeds")


@command("config", "generate a server configuration with one nkey user per agent", _arguments, server=False)
async def config(args: argparse.Namespace) -> int:
    owners = _owners(args.owner)
    if owners and args.agent:
        raise UsageError("in a bazaar (--owner) every agent belongs to an owner: give no --agent")
    owned = [agent for agents in owners.values() for agent in agents]
    roles = (args.agent, args.observer, args.ledger, args.operator, owned)
    if not any(roles):
        raise UsageError("name at least one --agent, --observer or --ledger, or an --operator")
    identities = {name: Identity.generate() for members in roles for name in members}
    if len(identities) < sum(map(len, roles)):  # one user per name: its seed is its identity
        raise UsageError("a name was given twice: each user has one role (an operator is an agent already)")
    agents, observers, ledgers, operators = (
        {name: identities[name].public_key for name in m} for m in roles[:4]
    )
    if owners:
        keys = {owner: {a: identities[a].public_key for a in members} for owner, members in owners.items()}
        text = bazaar_config(keys, observers, ledgers, operators)
    else:
        text = server_config(agents, observers, ledgers, operators)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nats-server.conf").write_text(text)
    seeds = {}
    for name, identity in identities.items():
        # In a bazaar each owner gets a directory of its own seeds (hand it that one only).
        owner = next(
            (o for o, members in owners.items() if name in members), _BOARD_FOLDER if owners else None
        )
        folder = args.out / owner if owner else args.out
        folder.mkdir(parents=True, exist_ok=True)
        seeds[name] = seed_file = folder / f"{name}.seed"
        seed_file.write_text(identity.seed + "\n")
        seed_file.chmod(0o600)
    print(f"wrote {args.out / 'nats-server.conf'} and {len(identities)} seed file(s) (mode 600)")
    roles_run = {"agents": [*args.agent, *owned], "operators": args.operator, "ledgers": args.ledger}
    for line in _how_to_run(args.out, seeds, observers=args.observer, **roles_run):
        print(line)
    return 0


def _owners(given: list[str]) -> dict[str, list[str]]:
    """``--owner OWNER=NAME,NAME`` arguments as owner -> agent ids (``OWNER-NAME``)."""
    owners: dict[str, list[str]] = {}
    for spec in given:
        owner, _, names = spec.partition("=")
        if owner == _BOARD_FOLDER:
            raise UsageError(
                f"--owner {spec!r}: {_BOARD_FOLDER!r} is the board's own users' folder, name it otherwise"
            )
        if not owner or not names or "-" in owner or owner in owners:
            raise UsageError(
                f"--owner {spec!r}: expected OWNER=NAME[,NAME...], each owner once, no '-' in OWNER"
            )
        owners[owner] = [owned_agent_id(owner, name.strip()) for name in names.split(",") if name.strip()]
    return owners


def _how_to_run(
    out: Path,
    seeds: dict[str, Path],
    *,
    agents: list[str],
    operators: list[str],
    ledgers: list[str],
    observers: list[str],
) -> list[str]:
    """The commands that start the server and each role, with the files just written."""

    def creds(name: str) -> str:
        return f"--creds {seeds[name]}"

    lines = [f"  nats-server -js -c {out / 'nats-server.conf'}    # the server (first)"]
    lines += [
        f"  ants-nats limit set CAP --per-minute N {creds(name)}    # the operator" for name in operators[:1]
    ]
    lines += [f"  ants-nats agent --name {name} --cap CAP {creds(name)}" for name in (*operators, *agents)]
    lines += [f"  ants-ledger {creds(name)}    # the ledger service" for name in ledgers]
    lines += [f"  ants-nats tasks {creds(name)}    # an observer reads" for name in observers]
    return ["then run (add --server URL where the server is not on 127.0.0.1:4222):", *lines]
