"""Access control with NATS itself: a server configuration with one nkey user per agent.

An agent may announce only its own card (``ants.cap.<id>``, ``ants_agents/<id>``), lay trail events
only in its own name (``ants.trail.<kind>.<ref>.<id>``, or naming no author), write only its
own lease keys (``ants_leases/<task id>.<id>``: nobody can forge the expiry of another's claim),
may not write the ledger, and may not delete, purge or reconfigure streams, buckets or consumers.
The ledger service (a user of its own) is the only writer of ``ants_ledger``; an observer may read
everything and write nothing. The server enforces it; the library turns refusals into
``PermissionDenied``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .errors import InvalidTask
from .names import (
    AGENTS_BUCKET,
    ANONYMOUS,
    ARTIFACTS_BUCKET,
    BUDGETS_BUCKET,
    CARD_SUBJECT_PREFIX,
    COUNTED_BUCKET,
    LEASES_BUCKET,
    LEDGER_BUCKET,
    LIMITS_BUCKET,
    MAX_KIND_TOKENS,
    RATES_BUCKET,
    ROUTES_BUCKET,
    SCHEDULE_SUBJECT_PREFIX,
    TASKS_BUCKET,
    TRAIL_SUBJECT_PREFIX,
    UNROUTABLE_BUCKET,
    WORK_SUBJECT_PREFIX,
    is_valid_id,
)

_DESTRUCTIVE = [
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.CONSUMER.DELETE.>",
]

_READ_ONLY_API = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.>",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.>",
    "$JS.API.DIRECT.GET.>",
    # Ephemeral consumers back every read and watch; a named or durable one (a route's, the
    # ledger's) is created on its own subject, which a reader may not touch.
    "$JS.API.CONSUMER.CREATE.*",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.FC.>",
    "$SRV.>",
    "_INBOX.>",
]


def agent_permissions(agent_id: str, *, also: Sequence[str] = ()) -> dict[str, object]:
    """Publish/subscribe permissions of agent ``agent_id`` (and ``also`` these subjects)."""
    return {
        "publish": {
            "allow": [
                *also,
                f"{CARD_SUBJECT_PREFIX}.{agent_id}",
                f"$KV.{AGENTS_BUCKET}.{agent_id}",
                f"$KV.{TASKS_BUCKET}.>",
                f"$KV.{LEASES_BUCKET}.*.{agent_id}",
                f"$KV.{ROUTES_BUCKET}.>",
                f"$KV.{UNROUTABLE_BUCKET}.>",
                # Rate windows and budgets are taken from and charged by every agent (CAS); any
                # agent may set a limit as it may submit work (there is no operator role yet).
                f"$KV.{LIMITS_BUCKET}.>",
                f"$KV.{RATES_BUCKET}.>",
                f"$KV.{BUDGETS_BUCKET}.>",
                f"{WORK_SUBJECT_PREFIX}.>",
                f"{SCHEDULE_SUBJECT_PREFIX}.*",
                f"$O.{ARTIFACTS_BUCKET}.>",
                # The Synadia Agent Protocol's heartbeats (a gateway, or an agent hosting one).
                "agents.>",
                *trail_permissions(agent_id),
                "$JS.API.>",
                "$JS.ACK.>",
                *_READ_ONLY_API,
            ],
            "deny": _DESTRUCTIVE,
        },
        "subscribe": {"allow": [">"]},
        "allow_responses": True,  # answering nats.micro PING/INFO/STATS requests
    }


def trail_permissions(agent_id: str) -> list[str]:
    """The trail subjects ``agent_id`` may publish on: events ending with its own id (``by``), or
    naming no author (``_``), for every length of kind; never one in another agent's name."""
    return [
        f"{TRAIL_SUBJECT_PREFIX}.{'*.' * (kind_tokens + 1)}{author}"
        for kind_tokens in range(2, MAX_KIND_TOKENS + 1)
        for author in (agent_id, ANONYMOUS)
    ]


def ledger_permissions(name: str) -> dict[str, object]:
    """An agent's permissions (it follows the trail like one) plus writing ``ants_ledger``."""
    return agent_permissions(name, also=[f"$KV.{LEDGER_BUCKET}.>", f"$KV.{COUNTED_BUCKET}.>"])


def observer_permissions() -> dict[str, object]:
    """Read-only permissions: watch and read everything, write nothing."""
    return {"publish": {"allow": _READ_ONLY_API, "deny": _DESTRUCTIVE}, "subscribe": {"allow": [">"]}}


def server_config(
    agents: Mapping[str, str], observers: Mapping[str, str] = {}, ledgers: Mapping[str, str] = {}
) -> str:
    """A ``nats-server`` configuration block authorising ``agents``, ``observers`` and ``ledgers``
    (ledger services, the only writers of ``ants_ledger``).

    Each maps a name (the agent id, for agents and ledgers) to the user's public nkey (``U...``, e.g.
    ``Identity.public_key``). The output is JSON, which the server's configuration format accepts.
    """
    users = []
    for role, members in ((agent_permissions, agents), (ledger_permissions, ledgers)):
        for agent_id, nkey in sorted(members.items()):
            if not is_valid_id(agent_id):
                raise InvalidTask(f"invalid agent id {agent_id!r}")
            users.append({"nkey": _checked(nkey), "permissions": role(agent_id)})
    for _, nkey in sorted(observers.items()):
        users.append({"nkey": _checked(nkey), "permissions": observer_permissions()})
    return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"


def _checked(nkey: str) -> str:
    if not (nkey.startswith("U") and len(nkey) == 56):
        raise InvalidTask(f"not a user public nkey: {nkey!r}")
    return nkey
