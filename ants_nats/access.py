"""Access control with NATS itself: a server configuration with one nkey user per agent.

An agent may announce only its own card (``ants.cap.<id>``, ``ants_agents/<id>``) and may not
delete, purge or reconfigure streams, buckets or consumers; an observer may read everything and
write nothing. The server enforces it; the library turns refusals into ``PermissionDenied``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .errors import InvalidTask
from .names import (
    AGENTS_BUCKET,
    CARD_SUBJECT_PREFIX,
    LEASES_BUCKET,
    LEDGER_BUCKET,
    ROUTES_BUCKET,
    TASKS_BUCKET,
    TRAIL_SUBJECT_PREFIX,
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
    "$JS.API.CONSUMER.CREATE.>",  # ephemeral consumers back every read and watch
    "$JS.API.CONSUMER.INFO.>",
    "$JS.API.CONSUMER.MSG.NEXT.>",
    "$JS.FC.>",
    "$SRV.>",
    "_INBOX.>",
]


def agent_permissions(agent_id: str) -> dict[str, object]:
    """Publish/subscribe permissions of agent ``agent_id``."""
    return {
        "publish": {
            "allow": [
                f"{CARD_SUBJECT_PREFIX}.{agent_id}",
                f"$KV.{AGENTS_BUCKET}.{agent_id}",
                f"$KV.{TASKS_BUCKET}.>",
                f"$KV.{LEASES_BUCKET}.>",
                f"$KV.{ROUTES_BUCKET}.>",
                f"$KV.{LEDGER_BUCKET}.>",
                f"{WORK_SUBJECT_PREFIX}.>",
                f"{TRAIL_SUBJECT_PREFIX}.>",
                "$JS.API.>",
                "$JS.ACK.>",
                *_READ_ONLY_API,
            ],
            "deny": _DESTRUCTIVE,
        },
        "subscribe": {"allow": [">"]},
        "allow_responses": True,  # answering nats.micro PING/INFO/STATS requests
    }


def observer_permissions() -> dict[str, object]:
    """Read-only permissions: watch and read everything, write nothing."""
    return {"publish": {"allow": _READ_ONLY_API, "deny": _DESTRUCTIVE}, "subscribe": {"allow": [">"]}}


def server_config(agents: Mapping[str, str], observers: Mapping[str, str] = {}) -> str:
    """A ``nats-server`` configuration block authorising ``agents`` and ``observers``.

    Both map a name (the agent id, for agents) to the user's public nkey (``U...``, e.g.
    ``Identity.public_key``). The output is JSON, which the server's configuration format accepts.
    """
    users = []
    for agent_id, nkey in sorted(agents.items()):
        if not is_valid_id(agent_id):
            raise InvalidTask(f"invalid agent id {agent_id!r}")
        users.append({"nkey": _checked(nkey), "permissions": agent_permissions(agent_id)})
    for _, nkey in sorted(observers.items()):
        users.append({"nkey": _checked(nkey), "permissions": observer_permissions()})
    return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"


def _checked(nkey: str) -> str:
    if not (nkey.startswith("U") and len(nkey) == 56):
        raise InvalidTask(f"not a user public nkey: {nkey!r}")
    return nkey
