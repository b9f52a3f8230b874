"""Public, stable names on the wire: buckets, streams, subjects and consumers.

These are part of the public contract (see docs/protocol.md); other NATS clients and the ``nats``
CLI rely on them, so they change only with a major version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TASKS_BUCKET = "ants_tasks"
"""KV bucket: one key per task id, value a ``TaskRecord`` (spec + state)."""

LEASES_BUCKET = "ants_leases"
"""KV bucket: one key ``<task id>.<agent id>`` per direct claim (``TaskBoard.claim``), value a
``LeaseRecord``; keys expire on the server. Claims through a ticket keep their lease as the
ticket's un-acked delivery."""


def lease_key(task_id: str, agent_id: str) -> str:
    """Key of ``agent_id``'s lease on ``task_id`` in ``ants_leases``: its own, so access control can
    let each agent write only its own leases."""
    return f"{task_id}.{agent_id}"


UNROUTABLE_BUCKET = "ants_unroutable"
"""KV bucket: one key per task id that waits, unroutable, for an agent able to take it (a
``UnroutableTask``); its ticket is gone, and an agent that joins or changes its offer reads this
bucket and announces what it can take."""

ROUTES_BUCKET = "ants_routes"
"""KV bucket: one key per capability route (set of required capabilities), value a ``Route``."""

WORK_STREAM = "ANTS_WORK"
"""Work-queue stream of tickets: one ticket per ready task, on ``ants.work.<route>``."""

WORK_SUBJECT_PREFIX = "ants.work"

AGENTS_BUCKET = "ants_agents"
"""KV bucket: one key per live agent id, value its ``AgentCard``; keys expire when it stops announcing."""

CARD_SUBJECT_PREFIX = "ants.cap"
"""Agents announce their card on ``ants.cap.<agent id>`` (core NATS) as well as in the bucket."""

MICRO_SERVICE_NAME = "ants-agent"
"""Name under which every agent answers the NATS services framework's PING/INFO/STATS."""

LEDGER_BUCKET = "ants_ledger"
"""KV bucket: one key per agent id, value an ``AgentLedger`` projected from the trail."""

COUNTED_BUCKET = "ants_counted"
"""KV bucket the ledger service alone writes: one key per trail event it counted
(``<task id>.<token>.<outcome>``, ``<task id>.bad.<author>``), so a copy of it counts for nothing."""

BAD_RESULT_MARK = "result.bad"
FORGED_RECORD = "corrupt.forged_record"
"""Event kind laid by a reader of a signed board that found (and undid) a forged task revision."""
"""Mark laid (by anyone) on a task whose result turned out wrong; ``data.agent`` is the completer."""

TRAIL_STREAM = "ANTS_TRAIL"
"""Stream of trail events (the pheromone trail), on ``ants.trail.<kind>.<ref>.<author>``."""

TRAIL_SUBJECT_PREFIX = "ants.trail"

SCHEDULES_STREAM = "ANTS_SCHEDULES"
"""Stream of periodic tasks (server-side message schedules): the schedule on ``ants.schedule.<name>``,
its latest firing on ``ants.fire.<name>``."""

SCHEDULE_SUBJECT_PREFIX = "ants.schedule"
FIRE_SUBJECT_PREFIX = "ants.fire"

SCHEDULE_RELAY_CONSUMER = "schedule_relay"
"""Durable pull consumer of the firings, shared by every agent: whoever pulls a firing submits its task."""

MAX_SCHEDULE_NAME_LENGTH = 111
"""Longest schedule name: a firing's task id is ``<name>-<UTC time>`` (17 characters more)."""


def schedule_subject(name: str) -> str:
    """Subject holding the schedule ``name``."""
    return f"{SCHEDULE_SUBJECT_PREFIX}.{name}"


def fire_subject(name: str) -> str:
    """Subject the server publishes the firings of schedule ``name`` on."""
    return f"{FIRE_SUBJECT_PREFIX}.{name}"


LIMITS_BUCKET = "ants_limits"
"""Shared rate limits, by capability (``Limit``)."""

RATES_BUCKET = "ants_rates"
"""What agents took of each limit lately, and holds (``RateWindow``)."""

RATE_HOLD_MARK = "rate.held"
"""The trail mark an agent lays when a provider rate-limits it: key = the capability held back."""

BUDGETS_BUCKET = "ants_budgets"
"""Submissions' budgets and what they spent (``Budget``)."""

ARTIFACTS_BUCKET = "ants_artifacts"
"""Object Store bucket (stream ``OBJ_ants_artifacts``) of payloads and results too big to be inline,
and of the files handlers put (``TaskContext.put_artifact``); objects expire with the bucket's TTL."""


NO_REQUIREMENTS_ROUTE = "any"
"""Route of tasks that require no capability: every agent serves it."""

ROUTE_SEPARATOR = "="
MAX_ROUTE_LENGTH = 128
"""Longest route name: it becomes part of a consumer name and of subjects, which the server bounds."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
"""Task and agent ids: safe as a KV key, a subject token and a consumer name."""
ID_RULE = "1-128 of A-Z a-z 0-9 _ -, starting with a letter or digit"
"""``ID_PATTERN`` in words, for the errors that refuse an id."""

CAPABILITY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Capability names and task kinds: lower case, safe as a subject token."""

MARK_NAME_PATTERN = r"^[a-z0-9_-]+(\.[a-z0-9_-]+){0,4}$"
"""Names of marks: one to five dotted lower-case tokens, e.g. ``artifact.written``."""

_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """True when ``value`` is usable as a task or agent id."""
    return bool(_ID_RE.match(value))


_CAPABILITY_RE = re.compile(CAPABILITY_PATTERN)


def is_valid_capability(value: str) -> bool:
    """Whether ``value`` is a capability name (1-64 of a-z 0-9 _ -, starting alphanumeric)."""
    return bool(_CAPABILITY_RE.match(value))


def route_of(requires: Iterable[str]) -> str:
    """The canonical route name of a set of required capabilities (sorted, ``=``-joined)."""
    caps = sorted(set(requires))
    return ROUTE_SEPARATOR.join(caps) if caps else NO_REQUIREMENTS_ROUTE


def requires_of(route: str) -> tuple[str, ...]:
    """The required capabilities a route name stands for (inverse of ``route_of``)."""
    return () if route == NO_REQUIREMENTS_ROUTE else tuple(route.split(ROUTE_SEPARATOR))


EXPRESS_LANE = "express"
"""Tickets of tasks with ``priority > 0`` travel on ``ants.work.<route>.express``."""


def work_subject(route: str, *, express: bool = False) -> str:
    """Subject on which tickets for ``route`` are published (its express lane with ``express``)."""
    return f"{WORK_SUBJECT_PREFIX}.{route}.{EXPRESS_LANE}" if express else f"{WORK_SUBJECT_PREFIX}.{route}"


def work_consumer(route: str, *, express: bool = False) -> str:
    """Durable pull consumer shared by every agent able to serve ``route`` (or its express lane)."""
    return f"work_{route}_{EXPRESS_LANE}" if express else f"work_{route}"


ANONYMOUS = "_"
"""The author token of a trail event that names no author (``by`` unset): never an agent id."""

MAX_KIND_TOKENS = 6
"""Most dot-separated tokens in an event's kind (``mark.`` and a mark name of up to five): access
control lists one pattern per length, since NATS wildcards cannot end a subject after a ``>``."""


def trail_topic(kind: str, ref: str) -> str:
    """What an event is about, as its subject without the author: ``ants.trail.<kind>.<ref>``
    (``kind`` is dotted, e.g. ``task.claimed``); every deposit of one mark shares it."""
    return f"{TRAIL_SUBJECT_PREFIX}.{kind}.{ref}"


def trail_subject(kind: str, ref: str, by: str | None) -> str:
    """Subject of a trail event: ``ants.trail.<kind>.<ref>.<by>``, ending with its author's id (or
    ``_``), so that access control can let each agent lay events in its own name only."""
    return f"{trail_topic(kind, ref)}.{by or ANONYMOUS}"


def trail_filter(kind: str, ref: str = "*") -> str:
    """A filter for the events of ``kind`` (may hold wildcards) about ``ref``, whoever laid them."""
    return f"{trail_topic(kind, ref)}.*"


def is_valid_filter(subject: str) -> bool:
    """Whether ``subject`` is a NATS subject filter: dot-separated tokens, none empty, with no
    white space; ``*`` only as a whole token, ``>`` only as the whole last one."""
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            return False
        if ("*" in token and token != "*") or (">" in token and (token != ">" or i < len(tokens) - 1)):
            return False
    return True


_TASK_EVENT_AT = len(f"{TRAIL_SUBJECT_PREFIX}.task.")


def task_event_of(subject: str) -> tuple[str, str]:
    """The kind (``completed``) and the task of a task event's subject
    (``ants.trail.task.<kind>.<task id>.<author>``)."""
    kind, _, rest = subject[_TASK_EVENT_AT:].partition(".")
    return kind, rest.rpartition(".")[0]


def card_subject(agent_id: str) -> str:
    """Subject on which ``agent_id`` announces its card."""
    return f"{CARD_SUBJECT_PREFIX}.{agent_id}"
