"""The Synadia Agent Protocol for NATS (v0.3), seen from the board.

A *protocol agent* is a NATS micro service named ``agents`` that takes prompts on
``agents.prompt.<agent>.<owner>.<name>`` and streams its answer back (a leading ``ack``,
``response`` chunks, an empty terminator; errors as ``Nats-Service-Error-Code`` headers). This
module lets such an agent serve a capability of the swarm: ``via_agent_protocol(nc, "echo")`` is
a ``Handler`` that prompts the protocol agent for each task an ``Agent`` claims, streams its
chunks into ``ctx.progress`` and returns the text it answered. Its errors become the board's:
a ``400`` fails the task for good (``NonRetryable``), ``404`` / ``409`` / ``503`` (it cannot
take the task now) decline it for another agent (``Decline``), a ``429`` is a rate limit
(``RateLimited``: the swarm holds the capability back for a while), anything else fails the
attempt, to be retried.

The other direction, prompts becoming tasks, is the gateway service (``services/agent_gateway/``,
``ants-agent-gateway``); the conversions both share are here: a task's payload as a prompt
envelope (``envelope_fields``), a result as response text (``response_text``), and the status
token that carries a progress report (``progress_status`` / ``parse_progress_status``).

The protocol's SDKs (``synadia-ai-agents``, ``synadia-ai-agent-service``) come with the
``agent-protocol`` extra and are imported only when a protocol agent is actually used, so the
core library does not need them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import nats.errors
from nats.aio.client import Client
from pydantic import JsonValue

from ._connect import connect
from .context import TaskContext
from .errors import AgentProtocolError
from .log import get_logger
from .models import Task
from .signals import Decline, NonRetryable, RateLimited

if TYPE_CHECKING:
    from synadia_ai.agents import Agent as ProtocolAgent
    from synadia_ai.agents import StreamMessage

log = get_logger("agent_protocol")

EXTRA_HINT = "pip install 'ants-nats[agent-protocol]'"
PROTOCOL_VERSION = "0.3"
"""The protocol version this module speaks (the SDKs' MAJOR.MINOR)."""

DECLINED_CODES = frozenset({404, 409, 503})
"""§9 statuses meaning "not here, not now": the task is declined, for another agent or later."""
ABSENT_RETRY_S = 5.0
"""How long a decline for want of an answering protocol agent stands: "not now", not "never"."""
RATE_LIMITED_CODE = 429
RATE_LIMITED_RETRY_S = 30.0
"""How long a 429 holds the capability back (the protocol's error says nothing of when to retry)."""
INVALID_CODES = frozenset({400, 413, 422})
"""§9 statuses meaning the request itself is wrong: trying again cannot help."""

_SERVICE_ERROR = re.compile(r"^service error (\d{3}): ?(.*)$", re.DOTALL)
"""How the caller SDK words an error frame (it keeps the code only in the message)."""

PROGRESS_TOKEN = "progress"
"""First word of the ``status`` chunk that carries a progress report: ``progress <fraction> <note>``."""


def sdk() -> ModuleType:
    """The caller SDK (``synadia_ai.agents``); ``AgentProtocolError`` naming the extra if missing."""
    return _import("synadia_ai.agents")


def host_sdk() -> ModuleType:
    """The host SDK (``synadia_ai.agent_service``); ``AgentProtocolError`` naming the extra if missing."""
    return _import("synadia_ai.agent_service")


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AgentProtocolError(
            f"the Synadia Agent Protocol needs the agent-protocol extra ({module} is missing): {EXTRA_HINT}"
        ) from exc


# ------------------------------------------------------------------- conversions both directions share


def envelope_fields(payload: JsonValue) -> dict[str, Any]:
    """A task's payload as the fields of a prompt envelope (§5.1).

    An object with a ``prompt`` string is an envelope already (what the gateway submits: the
    prompt, its attachments and any extension fields, kept for relaying as §5.6 asks); a string
    is the prompt text; anything else is sent as its JSON text.
    """
    if isinstance(payload, dict) and isinstance(payload.get("prompt"), str):
        return dict(payload)
    if isinstance(payload, str):
        return {"prompt": payload}
    return {"prompt": json.dumps(payload, ensure_ascii=False)}


def response_text(result: JsonValue) -> str:
    """A task's result as the text of a ``response`` chunk: a string as it is, anything else as JSON."""
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def progress_status(fraction: float, note: str = "") -> str:
    """The status token reporting progress: ``progress 0.5 halfway`` (callers that do not know it
    ignore it, as §6.4 asks; a ``via_agent_protocol`` handler turns it back into progress)."""
    return f"{PROGRESS_TOKEN} {fraction:g} {note}".rstrip()


def parse_progress_status(status: str) -> tuple[float, str] | None:
    """``(fraction, note)`` of a ``progress_status`` token, or None for any other status."""
    word, _, rest = status.partition(" ")
    if word != PROGRESS_TOKEN:
        return None
    number, _, note = rest.partition(" ")
    try:
        fraction = float(number)
    except ValueError:
        return None
    return (fraction, note) if 0.0 <= fraction <= 1.0 else None


# ------------------------------------------------------------------- the handler


@dataclass(frozen=True)
class AgentAddress:
    """Which protocol agent to prompt: its ``agent`` (``metadata.agent``), and optionally its
    ``owner`` and instance ``name`` (the last token of its subjects); None matches any."""

    agent: str
    owner: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> AgentAddress:
        """``agent``, ``agent.owner`` or ``agent.owner.name``, as in the agent's subjects."""
        parts = text.split(".")
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise AgentProtocolError(f"invalid protocol agent {text!r}: use agent[.owner[.name]]")
        return cls(parts[0], *parts[1:])

    def __str__(self) -> str:
        return ".".join(p for p in (self.agent, self.owner, self.name) if p is not None)


class AgentProtocolHandler:
    """A ``Handler`` served by the protocol agent ``agent`` (``agent[.owner[.name]]``, as in its
    subjects): register it like any other, ``agent.handler("prompt")(via_agent_protocol(board.nc,
    "echo"))``, and the ``Agent`` claims tasks as usual and has the protocol agent do them.

    The task's payload is the prompt (see ``envelope_fields``); the text the agent answers is the
    result, and each ``response`` chunk is reported with ``ctx.progress`` as it comes (at most one
    report every ``progress_interval`` seconds; 0 reports every chunk). The agent is found by
    discovery (``$SRV.INFO.agents``, waiting up to ``discover_wait`` s) on first use, and again
    after it stopped answering. A stream silent for ``inactivity_timeout`` s, or longer than
    the task's ``timeout`` (else ``max_wait``) s, fails the attempt.

    Errors: a ``400`` (the prompt is invalid) fails the task for good; ``404``, ``409``, ``503``,
    and no agent answering, decline it (another agent, or this one later, takes it); a ``429``
    raises ``RateLimited`` (the task goes back uncounted and the swarm holds its capabilities
    back for ``RATE_LIMITED_RETRY_S``: the protocol's error carries no retry time); anything else
    fails the attempt (``AgentProtocolError``), retried as the task says.

    With a connection (e.g. ``board.nc``) the handler is ready as it is; with a URL, open it
    first (``async with via_agent_protocol(url, ...) as handler``), which connects (as nkeys
    user ``seed``, if given) and closes the connection on exit. ``AgentProtocolError`` when the
    ``agent-protocol`` extra is not installed.
    """

    def __init__(
        self,
        nc_or_url: Client | str,
        agent: str | AgentAddress,
        *,
        seed: str | None = None,
        inactivity_timeout: float = 60.0,
        max_wait: float = 600.0,
        discover_wait: float = 2.0,
        progress_interval: float = 0.0,
    ) -> None:
        self._sdk = sdk()  # at once: a missing extra is a clear error when the handler is made
        self.address = agent if isinstance(agent, AgentAddress) else AgentAddress.parse(agent)
        self._url = nc_or_url if isinstance(nc_or_url, str) else None
        self._nc = nc_or_url if isinstance(nc_or_url, Client) else None
        self._seed = seed
        self.inactivity_timeout = inactivity_timeout
        self.max_wait = max_wait
        self.discover_wait = discover_wait
        self.progress_interval = progress_interval
        self._target: ProtocolAgent | None = None
        self._discovering = asyncio.Lock()
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        """With a URL, connect (closed on exit); with a connection, nothing to do."""
        if self._url is not None and self._nc is None:
            async with AsyncExitStack() as stack:
                self._nc = await stack.enter_async_context(
                    connect(self._url, name=f"via-{self.address.agent}", seed=self._seed)
                )
                self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._target = None
        if self._stack is not None:
            stack, self._stack = self._stack, None
            self._nc = None
            await stack.aclose()

    async def __call__(self, task: Task, ctx: TaskContext) -> JsonValue:
        """Prompt the protocol agent with the task's payload; its answer (the text of its
        ``response`` chunks) is the result, each chunk a progress report meanwhile."""
        # The extra is there: the handler checked when it was made.
        from synadia_ai.agents import (  # noqa: PLC0415
            Envelope,
            NatsAgentError,
            ProtocolError,
            ResponseChunk,
            StatusChunk,
            ValidationError,
        )

        try:
            envelope = Envelope(**envelope_fields(task.payload))
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise NonRetryable(f"the payload is not a prompt envelope: {exc}") from exc
        target = await self._find()
        reports = _Progress(ctx, self.progress_interval)
        texts: list[str] = []
        acked = False
        try:
            # An async generator, to be closed when we leave early (the SDK's own advice).
            prompt = cast(
                "AsyncGenerator[StreamMessage, None]",
                target.prompt(
                    envelope, timeout=self.inactivity_timeout, max_wait_s=task.timeout or self.max_wait
                ),
            )
            async with aclosing(prompt) as stream:
                async for message in stream:
                    if isinstance(message, ResponseChunk):
                        texts.append(message.text)
                        await reports.text(message.text)
                        if message.attachments:
                            log.warning(
                                "agent_protocol.attachments_dropped",
                                task_id=task.id,
                                count=len(message.attachments),
                            )
                    elif isinstance(message, StatusChunk):
                        acked = acked or message.status == "ack"
                        relayed = parse_progress_status(message.status)
                        if relayed is not None:  # the protocol agent is a gateway of another swarm
                            await reports.report(*relayed)
                    else:  # a mid-stream query (§7): the board has no one to ask, the agent decides
                        log.warning("agent_protocol.query_unanswered", task_id=task.id, query=message.prompt)
        except ValidationError as exc:  # §5.4, checked before sending: the prompt cannot go
            raise NonRetryable(f"{self.address} cannot take this prompt: {exc}") from exc
        except ProtocolError as exc:
            raise self._refused(exc, acked) from exc
        except (NatsAgentError, nats.errors.Error) as exc:
            raise AgentProtocolError(f"prompting {self.address} failed: {exc}") from exc
        await reports.flush()
        log.debug("agent_protocol.answered", task_id=task.id, agent=str(self.address), chunks=len(texts))
        return "".join(texts)

    def _refused(self, exc: Exception, acked: bool) -> Exception:
        """What an error of the stream means for the task."""
        matched = _SERVICE_ERROR.match(str(exc))
        if matched is None:
            if not acked:
                # Every answer starts with the ack (§6.4): a stream that broke before it is the
                # server's "no responders" status (which the SDK reads as a malformed chunk) or an
                # agent gone meanwhile. Look for it again next time, and let others have the task.
                self._target = None
                return Decline(
                    f"protocol agent {self.address} did not answer ({exc})", retry_after=ABSENT_RETRY_S
                )
            return AgentProtocolError(f"the stream of {self.address} broke: {exc}")
        code, description = int(matched[1]), matched[2]
        message = f"protocol agent {self.address} answered {code}: {description}"
        log.info("agent_protocol.error", agent=str(self.address), code=code, description=description)
        if code in DECLINED_CODES:
            return Decline(message, retry_after=ABSENT_RETRY_S)
        if code == RATE_LIMITED_CODE:
            return RateLimited(message, retry_after=RATE_LIMITED_RETRY_S)
        if code in INVALID_CODES:
            return NonRetryable(message)
        return AgentProtocolError(message, code=code)

    async def _find(self) -> ProtocolAgent:
        """The protocol agent to prompt, discovered once (again after it stopped answering)."""
        if self._nc is None:
            raise AgentProtocolError("open the handler first: async with via_agent_protocol(url, ...)")
        async with self._discovering:
            if self._target is None:
                self._target = await self._discover(self._nc)
        return self._target

    async def _discover(self, nc: Client) -> ProtocolAgent:
        sdk = self._sdk
        discovery = importlib.import_module("synadia_ai.agents.discovery")
        wanted = sdk.DiscoverFilter(agent=self.address.agent, owner=self.address.owner)
        try:
            infos = await discovery.discover_agent_infos(nc, max_wait_s=self.discover_wait)
        except nats.errors.Error as exc:
            raise Decline(f"cannot discover protocol agents: {exc}", retry_after=ABSENT_RETRY_S) from exc
        found = [
            info
            for info in infos
            if discovery.matches_filter(info, wanted)
            and self.address.name in (None, info.session_name)
            and _compatible(info.protocol_version)
        ]
        if not found:
            raise Decline(
                f"no protocol agent {self.address} (v{PROTOCOL_VERSION}) answers discovery",
                retry_after=ABSENT_RETRY_S,
            )
        # Instances of one agent share its prompt subject and queue group: any of them will do.
        info = min(found, key=lambda i: (i.owner, i.session_name, i.instance_id))
        log.info(
            "agent_protocol.discovered",
            agent=str(self.address),
            subject=info.prompt_endpoint.subject,
            instances=len(found),
        )
        agent: ProtocolAgent = sdk.Agent(
            nc, info, stream_inactivity_timeout=self.inactivity_timeout, prompt_max_wait_s=self.max_wait
        )
        return agent


def _compatible(version: str) -> bool:
    """Same MAJOR.MINOR (§11.2: within 0.x a minor version may break compatibility)."""
    return version.split(".")[:2] == PROTOCOL_VERSION.split(".")


class _Progress:
    """Reports a stream's text as progress, at most once every ``interval`` seconds (texts that
    arrive in between are joined into the next report, so token-sized chunks cost few events)."""

    def __init__(self, ctx: TaskContext, interval: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._pending: list[str] = []
        self._fraction = 0.0
        self._last = -float("inf")

    async def text(self, text: str) -> None:
        self._pending.append(text)
        if asyncio.get_running_loop().time() - self._last >= self._interval:
            await self.flush()

    async def report(self, fraction: float, note: str) -> None:
        self._fraction = fraction
        self._pending.append(note)
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        note, self._pending = "".join(self._pending), []
        self._last = asyncio.get_running_loop().time()
        # The protocol says nothing of how far along an answer is: the fraction is the last one a
        # relayed report gave, else 0.
        await self._ctx.progress(self._fraction, note)


via_agent_protocol = AgentProtocolHandler
"""``via_agent_protocol(board.nc, "echo")``: the handler, by the name that reads well where it is
registered (see ``AgentProtocolHandler``)."""
