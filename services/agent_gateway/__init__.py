"""The board's routes as agents of the Synadia Agent Protocol for NATS (v0.3).

Each presented capability route is a protocol agent (a NATS micro service named ``agents``,
prompt endpoint ``agents.prompt.<agent>.<owner>.<route>``, heartbeats on ``agents.hb...``), so
any protocol caller (``synadia-ai-agents``' ``discover()`` and ``prompt()``) can hand work to the
swarm without knowing it is one. A prompt becomes a task on the board; the caller's stream then
follows the task: its id, its progress reports as ``status`` chunks (``progress <fraction>
<note>``), and its result as the ``response``. An ``idempotency_key`` field in the envelope is the
task's id (or, when it is no valid id, derives it), so a caller that lost its stream prompts
again with the same key and follows the task already there: no work is done twice.

Errors are §9 statuses: an invalid envelope or task 400; no live agent able to take the prompt
(the route's capabilities and the kind) 404 with the reason, for a new task, and for a followed
task that becomes unroutable (after a ``task <id> unroutable: <reason>`` status); the key
already naming a different task 409; work the swarm holds back after a provider's rate limit 429
(the gateway follows the holds with a ``Throttle``); a task not finished within ``max_wait`` 504;
a task that failed, died or was cancelled 500 with its error. Each heartbeat (and ``status``
reply) carries the route's live able agents (and, when there are none, why) and its queue depth.

Modules: ``routes`` (what a route is, who can take its prompts, its queue), ``prompts`` (a
prompt's task and its stream), ``gateway`` (which routes are presented, and when), ``cli``.
"""

from .cli import main
from .gateway import DEFAULT_AGENT, DEFAULT_OWNER, AgentGateway
from .prompts import IDEMPOTENCY_FIELD, task_id_for
from .routes import DEFAULT_KIND, RouteSpec, RouteStatus

__all__ = [
    "DEFAULT_AGENT",
    "DEFAULT_KIND",
    "DEFAULT_OWNER",
    "IDEMPOTENCY_FIELD",
    "AgentGateway",
    "RouteSpec",
    "RouteStatus",
    "main",
    "task_id_for",
]
