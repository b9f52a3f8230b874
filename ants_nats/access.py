"""Access control with NATS itself: a server configuration with one nkey user per agent.

Every user is allowed the subjects its role needs and nothing else (there is no blanket
``$JS.API.>``). An agent may announce only its own card (``ants.cap.<id>``, ``ants_agents/<id>``),
lay trail events only in its own name (``ants.trail.<kind>.<ref>.<id>``, or naming no author), write
only its own lease keys (``ants_leases/<task id>.<id>``: nobody can forge the expiry of another's
claim), take from and charge rate windows and budgets, and create the board's own streams and
consumers; it may not write the ledger, set or lift rate limits, publish schedules, create other
streams, delete, purge or reconfigure streams, nor delete or pause consumers. An operator is an
agent that may also set and lift rate limits (``ants_limits``) and add and remove schedules. The
ledger service is the only writer of ``ants_ledger`` (and of ``ants_counted``) and the only one to
take from its trail consumer; an observer may read everything and write nothing. The server
enforces it; the library turns refusals into ``PermissionDenied``.

What the server cannot tell apart by subject stays allowed to whoever may write the subject: a KV
delete, purge or rollup is a write on the key's own subject with a header; a purge of part of a
stream is the same request as a purge of all of it; and creating a consumer under a name that
exists changes that consumer's settings (JetStream creates or updates).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from .errors import InvalidTask
from .names import (
    AGENTS_BUCKET,
    ANONYMOUS,
    ARTIFACTS_BUCKET,
    BUDGETS_BUCKET,
    CARD_SUBJECT_PREFIX,
    COUNTED_BUCKET,
    ID_RULE,
    LEASES_BUCKET,
    LEDGER_BUCKET,
    LIMITS_BUCKET,
    MAX_KIND_TOKENS,
    RATES_BUCKET,
    ROUTES_BUCKET,
    SCHEDULE_RELAY_CONSUMER,
    SCHEDULE_SUBJECT_PREFIX,
    SCHEDULES_STREAM,
    TASKS_BUCKET,
    TRAIL_STREAM,
    TRAIL_SUBJECT_PREFIX,
    UNROUTABLE_BUCKET,
    WORK_STREAM,
    WORK_SUBJECT_PREFIX,
    is_valid_id,
)

LEDGER_CONSUMER = "ledger"
"""The ledger service's durable consumer of the trail (the default of ``Ledger.project`` and of
``ants-ledger --durable``). Only ledger users may pull from it, acknowledge on it or create it: an
agent taking its events would keep them from being counted."""

_BOARD_BUCKETS = (
    TASKS_BUCKET,
    LEASES_BUCKET,
    UNROUTABLE_BUCKET,
    ROUTES_BUCKET,
    AGENTS_BUCKET,
    LEDGER_BUCKET,
    LIMITS_BUCKET,
    RATES_BUCKET,
    BUDGETS_BUCKET,
)
"""The KV buckets every board creates on connecting (``ants_counted`` is the ledger service's); a
bucket the board adds goes here too, or agents can no longer create the board."""

_BOARD_STREAMS = (
    *(f"KV_{bucket}" for bucket in _BOARD_BUCKETS),
    WORK_STREAM,
    TRAIL_STREAM,
    SCHEDULES_STREAM,
    f"OBJ_{ARTIFACTS_BUCKET}",
)
"""The streams an agent may create: those of a board, and no others."""

_WATCHED_STREAMS = (
    *(f"KV_{bucket}" for bucket in (*_BOARD_BUCKETS, COUNTED_BUCKET)),
    TRAIL_STREAM,
    f"OBJ_{ARTIFACTS_BUCKET}",
)
"""The streams read through ephemeral consumers (watches, replays, artifacts): all but those of
tickets and firings, which only their shared durable consumers take from."""

_READ_API = [
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*",
    "$JS.API.CONSUMER.INFO.*.*",
    # Ephemeral consumers back every watch, replay and artifact read. A request on this subject
    # may yet name an existing consumer, whose settings it then changes: so there are none on the
    # streams of tickets and firings, whose consumers every agent shares. On the trail it stays
    # open, and the ledger's consumer can be changed this way (though not taken from).
    *(f"$JS.API.CONSUMER.CREATE.{stream}" for stream in _WATCHED_STREAMS),
    # Replays of the trail, and the listing of the newest tasks, pull from their own ephemeral
    # consumer (no shared consumer lives on those streams but the ledger's, which is denied apart).
    # Nothing else is pulled from: a pull holds a ticket or a firing for the consumer's ack wait.
    f"$JS.API.CONSUMER.MSG.NEXT.{TRAIL_STREAM}.*",
    f"$JS.API.CONSUMER.MSG.NEXT.KV_{TASKS_BUCKET}.*",
    "$JS.FC.>",
    "$SRV.>",
    "_INBOX.>",
]
"""What reading and watching the board needs: the observer's whole permissions."""

_LEDGER_CONSUMER_API = [
    f"$JS.API.CONSUMER.MSG.NEXT.{TRAIL_STREAM}.{LEDGER_CONSUMER}",
    f"$JS.API.CONSUMER.DURABLE.CREATE.{TRAIL_STREAM}.{LEDGER_CONSUMER}",
    f"$JS.ACK.{TRAIL_STREAM}.{LEDGER_CONSUMER}.>",
]
"""Pulling from, recreating and acknowledging on the ledger's consumer: denied to all but ledgers."""


def trail_permissions(agent_id: str) -> list[str]:
    """The trail subjects ``agent_id`` may publish on: events ending with its own id (``by``), or
    naming no author (``_``), for every length of kind; never one in another agent's name."""
    return [
        f"{TRAIL_SUBJECT_PREFIX}.{'*.' * (kind_tokens + 1)}{author}"
        for kind_tokens in range(2, MAX_KIND_TOKENS + 1)
        for author in (agent_id, ANONYMOUS)
    ]


def _agent_subjects(agent_id: str) -> list[str]:
    """What an agent publishes to run, submit and settle work under its own name."""
    return [
        f"{CARD_SUBJECT_PREFIX}.{agent_id}",
        f"$KV.{AGENTS_BUCKET}.{agent_id}",
        f"$KV.{TASKS_BUCKET}.>",
        f"$KV.{LEASES_BUCKET}.*.{agent_id}",
        f"$KV.{ROUTES_BUCKET}.>",
        f"$KV.{UNROUTABLE_BUCKET}.>",
        # Every agent takes from rate windows and charges budgets (CAS); only an operator sets the
        # limits themselves.
        f"$KV.{RATES_BUCKET}.>",
        f"$KV.{BUDGETS_BUCKET}.>",
        f"{WORK_SUBJECT_PREFIX}.>",
        f"$O.{ARTIFACTS_BUCKET}.>",
        # The Synadia Agent Protocol's heartbeats (a gateway, or an agent hosting one).
        "agents.>",
        *trail_permissions(agent_id),
        # Whoever connects first creates the board: its streams, by name, and no others.
        *(f"$JS.API.STREAM.CREATE.{stream}" for stream in _BOARD_STREAMS),
        # Route consumers, the schedule relay, and services that follow the trail with a durable.
        f"$JS.API.CONSUMER.DURABLE.CREATE.{WORK_STREAM}.*",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{SCHEDULES_STREAM}.{SCHEDULE_RELAY_CONSUMER}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{TRAIL_STREAM}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{SCHEDULES_STREAM}.{SCHEDULE_RELAY_CONSUMER}",
        f"$JS.ACK.{WORK_STREAM}.>",
        f"$JS.ACK.{SCHEDULES_STREAM}.{SCHEDULE_RELAY_CONSUMER}.>",
        f"$JS.ACK.{TRAIL_STREAM}.>",
        *_READ_API,
    ]


def _permissions(
    allow: Sequence[str], *, deny: Sequence[str] = (), responds: bool = True
) -> dict[str, object]:
    """A user's permissions: publish ``allow`` but ``deny``, subscribe to anything; ``responds``:
    it may answer requests (nats.micro PING/INFO/STATS) on their reply subjects."""
    publish: dict[str, object] = {"allow": list(allow)}
    if deny:
        publish["deny"] = list(deny)
    permissions: dict[str, object] = {"publish": publish, "subscribe": {"allow": [">"]}}
    if responds:
        permissions["allow_responses"] = True
    return permissions


def agent_permissions(agent_id: str) -> dict[str, object]:
    """Publish/subscribe permissions of agent ``agent_id``."""
    return _permissions(_agent_subjects(agent_id), deny=_LEDGER_CONSUMER_API)


def operator_permissions(name: str) -> dict[str, object]:
    """An agent's permissions (under ``name``) plus setting and lifting rate limits and adding and
    removing schedules (removing one purges its subjects from ``ANTS_SCHEDULES``)."""
    operating = [
        f"$KV.{LIMITS_BUCKET}.>",
        f"{SCHEDULE_SUBJECT_PREFIX}.*",
        f"$JS.API.STREAM.PURGE.{SCHEDULES_STREAM}",
    ]
    return _permissions([*operating, *_agent_subjects(name)], deny=_LEDGER_CONSUMER_API)


def ledger_permissions(name: str) -> dict[str, object]:
    """An agent's permissions (it follows the trail like one) plus writing ``ants_ledger`` and
    ``ants_counted``, and taking from the ledger's trail consumer."""
    ledger = [
        f"$KV.{LEDGER_BUCKET}.>",
        f"$KV.{COUNTED_BUCKET}.>",
        f"$JS.API.STREAM.CREATE.KV_{COUNTED_BUCKET}",
    ]
    return _permissions([*ledger, *_agent_subjects(name)])


def observer_permissions() -> dict[str, object]:
    """Read-only permissions: watch and read everything, write nothing."""
    return _permissions(_READ_API, deny=_LEDGER_CONSUMER_API, responds=False)


def server_config(
    agents: Mapping[str, str],
    observers: Mapping[str, str] = {},
    ledgers: Mapping[str, str] = {},
    operators: Mapping[str, str] = {},
) -> str:
    """A ``nats-server`` configuration block authorising ``agents``, ``observers``, ``ledgers``
    (ledger services, the only writers of ``ants_ledger``) and ``operators`` (who alone set rate
    limits and schedules).

    Each maps a name (the agent id, for every role but observers) to the user's public nkey
    (``U...``, e.g. ``Identity.public_key``). The output is JSON, which the server's configuration
    format accepts.
    """
    roles = ((agent_permissions, agents), (ledger_permissions, ledgers), (operator_permissions, operators))
    return json.dumps({"authorization": {"users": _users(roles, observers)}}, indent=2) + "\n"


_Role = tuple[Callable[[str], dict[str, object]], Mapping[str, str]]
"""A role's permissions (given the user's name) and its members (name -> public nkey)."""


def _users(roles: Sequence[_Role], observers: Mapping[str, str] = {}) -> list[dict[str, object]]:
    """The server's user entries: each member of each role, then the read-only observers."""
    users: list[dict[str, object]] = [
        {"nkey": _checked(nkey), "permissions": role(_valid(name))}
        for role, members in roles
        for name, nkey in sorted(members.items())
    ]
    users += [
        {"nkey": _checked(nkey), "permissions": observer_permissions()}
        for _, nkey in sorted(observers.items())
    ]
    return users


BOARD_ACCOUNT = "BOARD"
"""In a bazaar (``bazaar_config``): the account that holds the board's streams and buckets."""

_INTO_THE_BOARD = ("$JS.API.>", "$KV.>", "$O.>", "ants.>", "$JS.ACK.>", "$JS.FC.>")
"""What an owner's account sends into the board's: JetStream requests, key-value and object writes,
the project's subjects (trail events, tickets, cards) and acknowledgements; each answered."""
_OUT_OF_THE_BOARD = ("ants.>", "_INBOX.>")
"""What an owner's account hears from the board's: the project's subjects (trail events as they are
laid, cards) and deliveries to its clients' inboxes (the watches' push consumers)."""


def owner_account(owner: str) -> str:
    """The account of ``owner``'s agents in a bazaar."""
    return f"OWNER_{owner}"


def owned_agent_id(owner: str, name: str) -> str:
    """The id of ``owner``'s agent ``name`` in a bazaar: ``<owner>-<name>``. The permissions bind
    each id to one user of the owner's account, so the prefix says whose agent it is."""
    return f"{owner}-{name}"


def owner_of(agent_id: str) -> str:
    """The owner of a bazaar agent (the prefix of its id up to the first ``-``)."""
    return agent_id.split("-", 1)[0]


def bazaar_config(
    owners: Mapping[str, Mapping[str, str]],
    observers: Mapping[str, str] = {},
    ledgers: Mapping[str, str] = {},
    operators: Mapping[str, str] = {},
) -> str:
    """A ``nats-server`` configuration for a bazaar: one account per owner and a board account.

    ``owners`` maps each owner (a name without ``-``) to its agents (agent id -> user public nkey;
    ids as ``owned_agent_id`` makes them). The board account (``BOARD_ACCOUNT``) holds JetStream and
    the ledger services, operators and observers; it exports to the owners' accounts exactly what
    working the board needs (``_INTO_THE_BOARD`` as services, ``_OUT_OF_THE_BOARD`` as streams) and
    nothing of one owner's account reaches another's but through the board. Within its account each
    agent has the permissions it has on a single-account server (its own card, lease keys and trail
    subjects; no ledger writes), so no owner can impersonate another's agents or write the ledger.
    """
    accounts = [owner_account(owner) for owner in owners]
    board_users = _users(((ledger_permissions, ledgers), (operator_permissions, operators)), observers)
    exports: list[dict[str, object]] = [{"service": s, "accounts": accounts} for s in _INTO_THE_BOARD]
    # A pull's answer is many messages: one for a request ($JS.API.>), or for an acknowledgement
    # that asks for the next message ($JS.ACK.>, "+NXT").
    for export in exports:
        if export["service"] in ("$JS.API.>", "$JS.ACK.>"):
            export["response_type"] = "stream"
    exports += [{"stream": subject, "accounts": accounts} for subject in _OUT_OF_THE_BOARD]
    config: dict[str, object] = {
        BOARD_ACCOUNT: {"jetstream": "enabled", "users": board_users, "exports": exports}
    }
    for owner, agents in sorted(owners.items()):
        if not is_valid_id(owner) or "-" in owner:
            raise InvalidTask(f"invalid owner name {owner!r} (letters, digits and _ only)")
        for agent_id in agents:
            if owner_of(_valid(agent_id)) != owner:
                raise InvalidTask(f"agent {agent_id!r} of owner {owner!r} must be named {owner}-<name>")
        users = _users(((agent_permissions, agents),))
        imports = [{"service": {"account": BOARD_ACCOUNT, "subject": s}} for s in _INTO_THE_BOARD]
        imports += [{"stream": {"account": BOARD_ACCOUNT, "subject": s}} for s in _OUT_OF_THE_BOARD]
        config[owner_account(owner)] = {"users": users, "imports": imports}
    return json.dumps({"accounts": config}, indent=2) + "\n"


def _valid(agent_id: str) -> str:
    if not is_valid_id(agent_id):
        raise InvalidTask(f"invalid agent id {agent_id!r}: use {ID_RULE}")
    return agent_id


def _checked(nkey: str) -> str:
    if not (nkey.startswith("U") and len(nkey) == 56):
        raise InvalidTask(f"not a user public nkey: {nkey!r}")
    return nkey
