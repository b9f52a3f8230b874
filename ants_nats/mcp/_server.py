"""``McpHost``: the board (and, with capabilities, a hosted agent) served to MCP clients.

Tools and resources are methods of the host; each tool turns the project's errors (``AntsError``,
``TimeoutError``) into an MCP tool error carrying the message alone, so a model reads what went
wrong and never a traceback. Anything else is a bug: the SDK logs its traceback on the server's
stderr and tells the client only that the tool failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated, Any, Concatenate, Self, TypeVar

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field, JsonValue

from ants_nats import AntsError, BoardConfig, TaskBoard, TaskRecord, TaskStatus, __version__
from ants_nats.log import get_logger
from ants_nats.waiting import why_waiting, why_waiting_many

from ._desk import Complete, Desk, Fail, Refuse
from ._schema import (
    MARK_SUBJECTS,
    AgentOut,
    Claimed,
    MarkLaid,
    MarkOut,
    Settled,
    TaskIdArg,
    TaskIdsArg,
    TaskIn,
    TaskOut,
    WorkItem,
    mark_key_problem,
    mark_name_problem,
)

log = get_logger("mcp")

R = TypeVar("R")
Method = Callable[Concatenate["McpHost", ...], Awaitable[R]]

MAX_WAIT_S = 300.0
"""Longest a tool waits (claim_next, wait_for_tasks): clients time requests out, models lose patience."""
_OPEN_SHOWN = 100

INSTRUCTIONS = """\
A shared task board on NATS JetStream, worked by autonomous agents with no manager.
Submit tasks (a DAG through depends_on), then get or wait for their results; find_agents says who can
do what. When this server was started with capabilities it also hosts an agent: claim_next gives you
the next task it can serve, then settle it with complete_task, fail_task or decline_task (progress
with report_progress). The lease is kept alive for you while you think. lay_mark and read_marks
leave and read signals (marks evaporate; laying one again reinforces it). A task in status
waiting_input asks a question (its "question"): answer_task answers it, and the work goes on.
"""


def _clear_errors(method: Method[R]) -> Method[R]:
    """Report the project's errors as tool errors with their message (and nothing else)."""

    @functools.wraps(method)
    async def guarded(self: McpHost, *args: Any, **kwargs: Any) -> R:
        try:
            return await method(self, *args, **kwargs)
        except TimeoutError as exc:  # (a board's wait names its tasks; a tool words the others)
            raise ToolError(str(exc) or "timed out") from None
        except AntsError as exc:
            raise ToolError(str(exc)) from None

    return guarded


class McpHost:
    """The MCP face of a board at ``url``: ``async with McpHost(url, ...) as host``, then
    ``host.serve_stdio()`` or ``host.serve_http(...)``.

    With ``capabilities`` it hosts an agent (named ``name``, ``capacity`` tasks at a time, kinds
    ``kinds`` or every kind) that hands its tasks to the model; without, claim_next and the other
    work tools say so. Over HTTP, every session shares the one agent.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "mcp",
        capabilities: Sequence[str] = (),
        capacity: int = 1,
        kinds: Sequence[str] | None = None,
        lease_ttl: float = BoardConfig.lease_ttl,
        pickup_timeout: float = 60.0,
        hold_timeout: float | None = 3600.0,
    ) -> None:
        self.url = url
        self.name = name
        self.capabilities = tuple(capabilities)
        self.capacity = capacity
        self.kinds = None if kinds is None else tuple(kinds)
        self.config = BoardConfig(lease_ttl=lease_ttl)
        self.pickup_timeout = pickup_timeout
        self.hold_timeout = hold_timeout
        self._stack = AsyncExitStack()
        self._board: TaskBoard | None = None
        self.desk: Desk | None = None
        """The hosted agent's desk, when the host has capabilities."""

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            self._board = await stack.enter_async_context(
                TaskBoard.connect(self.url, self.config, name=f"ants-mcp-{self.name}")
            )
            if self.capabilities:
                self.desk = await stack.enter_async_context(
                    Desk(
                        self._board,
                        name=self.name,
                        capabilities=self.capabilities,
                        capacity=self.capacity,
                        kinds=self.kinds,
                        pickup_timeout=self.pickup_timeout,
                        hold_timeout=self.hold_timeout,
                    )
                )
            self._stack = stack.pop_all()
        log.info("mcp.started", agent=self.agent_id, capabilities=list(self.capabilities))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        self._board = self.desk = None

    @property
    def board(self) -> TaskBoard:
        """The board (only inside ``async with``)."""
        if self._board is None:
            raise AntsError("the MCP host is not open")
        return self._board

    @property
    def agent_id(self) -> str | None:
        """Id of the hosted agent, if any."""
        return None if self.desk is None else self.desk.agent.id

    @property
    def author(self) -> str:
        """Who this server's submissions and marks are from: its agent, else the server's name."""
        return self.agent_id or f"mcp-{self.name}"

    def _desk(self) -> Desk:
        if self.desk is None:
            raise AntsError(
                "this server hosts no agent: start it with at least one capability (--cap) to work on tasks"
            )
        return self.desk

    # ----------------------------------------------------------------- serving

    def server(self) -> MCPServer:
        """A fresh MCP server exposing this host's tools and resources."""
        mcp: MCPServer = MCPServer(
            "ants-nats", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
        )
        for tool in (
            self.submit_tasks,
            self.get_task,
            self.wait_for_tasks,
            self.list_tasks,
            self.cancel_task,
            self.answer_task,
            self.find_agents,
            self.claim_next,
            self.complete_task,
            self.fail_task,
            self.decline_task,
            self.report_progress,
            self.lay_mark,
            self.read_marks,
        ):
            mcp.add_tool(tool)
        mcp.resource("ants://board", name="board", mime_type="application/json")(self.board_summary)
        mcp.resource("ants://agents", name="agents", mime_type="application/json")(self.agent_cards)
        return mcp

    async def serve_stdio(self) -> None:
        """Serve one client on stdin/stdout until it closes them."""
        await self.server().run_stdio_async()

    async def serve_http(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        sock: socket.socket | None = None,
        stop: asyncio.Event | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """Serve Streamable HTTP at ``http://host:port/mcp`` (or on the listening ``sock``) until
        ``stop`` is set or the process gets SIGINT/SIGTERM; ``say`` hears the URL once it listens.
        ``OSError`` when the address cannot be bound."""
        app = self.server().streamable_http_app(host=host)
        # log_config=None: the process's logging stays as configured (structlog on stderr).
        config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        with contextlib.ExitStack() as owned:
            if sock is None:
                # Bound here rather than by uvicorn: a busy port is an OSError for the caller (one
                # line and exit 2 from the command line), not a log line and a SystemExit.
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = owned.enter_context(socket.create_server((host, port), family=family))
            url = f"http://{host}:{sock.getsockname()[1]}/mcp"
            log.info("mcp.listening", url=url, agent=self.agent_id)
            if say is not None:
                say(f"serving MCP at {url}")

            async def stopper() -> None:
                if stop is not None:
                    await stop.wait()
                    server.should_exit = True

            watcher = asyncio.create_task(stopper(), name="mcp:http-stop")
            try:
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    # ----------------------------------------------------------------- tools: the board

    @_clear_errors
    async def submit_tasks(self, tasks: list[TaskIn]) -> list[TaskOut]:
        """Submit one or more tasks; dependencies may point at tasks in the same call or on the board.

        Nothing is written when any task is invalid. Submitting the same task again is harmless
        (the board returns it as it is); the same id with another definition is an error."""
        batch = [{**t.model_dump(exclude_none=True), "created_by": self.author} for t in tasks]
        return await self._views(await self.board.submit_many(batch))

    @_clear_errors
    async def get_task(self, task_id: TaskIdArg) -> TaskOut:
        """A task's current state, and its result once it is done."""
        return await self._view(await self.board.get(task_id))

    @_clear_errors
    async def wait_for_tasks(
        self,
        task_ids: TaskIdsArg,
        timeout: Annotated[float, Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait at most.")] = 30.0,
    ) -> list[TaskOut]:
        """Wait until every task named has finished (done, failed, dead or cancelled); their states
        and results. An error if they have not all finished within the timeout."""
        for task_id in task_ids:
            await self.board.get(task_id)  # an unknown id is an error now, not after the timeout
        try:
            final = await self.board.wait(task_ids, timeout=timeout)
        except TimeoutError:
            views = await self._views([await self.board.get(t) for t in task_ids])
            states = [
                f"{v.id} is {v.status.value}" + (f" ({v.waiting.text})" if v.waiting else "") for v in views
            ]
            raise TimeoutError(f"not finished within {timeout:g}s: {'; '.join(states)}") from None
        return [await self._view(final[task_id]) for task_id in task_ids]

    async def _view(self, record: TaskRecord) -> TaskOut:
        """The view of ``record``, with its result when it is done, or why it waits."""
        done = record.status is TaskStatus.DONE
        result = await self.board.result_of(record) if done else None
        return TaskOut.of(record, result, await why_waiting(self.board, record))

    async def _views(self, records: Sequence[TaskRecord]) -> list[TaskOut]:
        """The views of ``records``, each unfinished one with why it waits, a done one with its
        result when the record holds it (one kept as an artifact, too large to list: get_task)."""
        waiting = await why_waiting_many(self.board, records)
        return [TaskOut.of(record, record.result, waiting.get(record.task.id)) for record in records]

    @_clear_errors
    async def list_tasks(
        self,
        status: TaskStatus | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> list[TaskOut]:
        """Tasks on the board (optionally only those in ``status``), latest change first, with
        their results as get_task shows them (but those too large to list)."""
        records, _ = await self.board.recent(limit, lambda r: status is None or r.status is status)
        return await self._views(records)

    @_clear_errors
    async def cancel_task(self, task_id: TaskIdArg, reason: str = "cancelled through MCP") -> TaskOut:
        """Cancel a pending, waiting or claimed task; its dependents fail as blocked."""
        return await self._view(await self.board.cancel(task_id, reason, by=self.agent_id))

    @_clear_errors
    async def answer_task(self, task_id: TaskIdArg, answer: str, question: int | None = None) -> TaskOut:
        """Answer the question a task in status waiting_input asks (its ``question``): the task
        becomes claimable again, and the agent that takes it gets the answer. ``question``: the
        index (from 0) of the question answered, so a late answer is refused, not misplaced."""
        return await self._view(await self.board.answer(task_id, answer, question=question, by=self.author))

    @_clear_errors
    async def find_agents(self, requires: list[str] | None = None) -> list[AgentOut]:
        """Live agents having every capability in ``requires`` (all live agents if empty), least
        loaded first."""
        return [AgentOut.of(card) for card in await self.board.directory.who_can(requires or [])]

    # ----------------------------------------------------------------- tools: working as an agent

    @_clear_errors
    async def claim_next(
        self,
        timeout: Annotated[float, Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait at most.")] = 30.0,
    ) -> Claimed:
        """Take the next task this server's agent can serve (waiting up to ``timeout`` seconds).

        The task is yours until you settle it with complete_task, fail_task or decline_task; its lease
        is heartbeated for you meanwhile. No task within the timeout is not an error: call again."""
        desk = self._desk()
        offer = await desk.next(timeout)
        if offer is None:
            return Claimed(task=None, note=f"no task within {timeout:g}s; call claim_next again")
        task, ctx = offer.task, offer.ctx
        note = "settle it with complete_task, fail_task or decline_task"
        try:
            inputs = await ctx.dependency_results()
        except AntsError as exc:  # the task is still the model's: it may fail or decline it
            inputs, note = {}, f"{note}; its dependencies' results could not be read: {exc}"
        except asyncio.CancelledError:
            desk.unpick(offer)  # the call went away before the model saw the task
            raise
        item = WorkItem(
            task_id=task.id,
            kind=task.kind,
            payload=ctx.payload,
            requires=list(task.requires),
            depends_on=list(task.depends_on),
            dependency_results=inputs,
            lease_ttl=ctx.lease.ttl,
            settle_within=desk.time_left(offer),
        )
        return Claimed(task=item, note=note)

    async def _settle(self, task_id: TaskIdArg, answer: Complete | Fail | Refuse) -> Settled:
        record, outcome = await self._desk().settle(task_id, answer)
        note = "recorded" if outcome is not None else "handed over; not recorded on the board yet"
        if outcome == "expired":
            note = "too late: the lease had expired, so the result was not recorded"
        return Settled(task_id=task_id, status=record.status, outcome=outcome, note=note)

    @_clear_errors
    async def complete_task(self, task_id: TaskIdArg, result: JsonValue = None) -> Settled:
        """Finish a task you claimed, with its result (any JSON value)."""
        return await self._settle(task_id, Complete(result))

    @_clear_errors
    async def fail_task(self, task_id: TaskIdArg, error: str, retry: bool = True) -> Settled:
        """Report that your attempt at a task failed. With ``retry`` it goes back to the board (after a
        backoff) until its attempts run out; without, it fails for good and so do its dependents."""
        return await self._settle(task_id, Fail(error, retry))

    @_clear_errors
    async def decline_task(self, task_id: TaskIdArg, reason: str) -> Settled:
        """Hand a task you claimed back untouched, saying why; another agent takes it."""
        return await self._settle(task_id, Refuse(reason))

    @_clear_errors
    async def report_progress(
        self,
        task_id: TaskIdArg,
        fraction: Annotated[float, Field(ge=0, le=1, description="Share done, 0 to 1.")],
        note: str = "",
    ) -> str:
        """Report progress on a task you claimed (a ``task.progress`` event others can see)."""
        await self._desk().progress(task_id, fraction, note)
        return f"progress {fraction:.0%} reported on {task_id}"

    # ----------------------------------------------------------------- tools: the trail

    @_clear_errors
    async def lay_mark(
        self,
        name: str,
        key: str,
        data: JsonValue = None,
        intensity: Annotated[float, Field(ge=0, le=1_000_000)] = 1.0,
    ) -> MarkLaid:
        """Lay (or reinforce) the mark ``name`` (dotted, e.g. 'food.found') on ``key`` (an id) on the
        trail, with optional data. Its strength halves every ten minutes; deposits add up."""
        event = await self.board.trail.mark(
            name, key=key, data=data, intensity=intensity, agent=self.agent_id
        )
        return MarkLaid(name=name, key=key, seq=event.seq)

    @_clear_errors
    async def read_marks(
        self,
        name: str | None = None,
        key: str | None = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
    ) -> list[MarkOut]:
        """The strongest marks right now: all of them, those named ``name`` (and names under it, e.g.
        'food' covers 'food.found'), or only ``name`` on ``key``."""
        if name is None and key is not None:
            raise ToolError("give the mark's name along with its key")
        problem = (name and mark_name_problem(name)) or (key and mark_key_problem(key))
        if problem:
            raise ToolError(problem)
        subjects = f"{MARK_SUBJECTS}.>"
        if name is not None:
            subjects = f"{MARK_SUBJECTS}.{name}.>" if key is None else f"{MARK_SUBJECTS}.{name}.{key}.*"
        return [MarkOut.of(scent) for scent in await self.board.trail.strongest(subjects, limit=limit)]

    # ----------------------------------------------------------------- resources

    async def board_summary(self) -> str:
        """The board at a glance: tasks per status, and the unfinished ones."""
        try:
            records = await self.board.all_tasks()
            unfinished = sorted((r for r in records if not r.status.terminal), key=lambda r: r.updated_at)
            shown = await self._views(unfinished[:_OPEN_SHOWN])
        except AntsError as exc:
            raise ResourceError(str(exc)) from None
        summary = {
            "tasks": len(records),
            "by_status": dict(Counter(r.status.value for r in records)),
            "unfinished": [view.model_dump(mode="json", exclude={"result"}) for view in shown],
            "unfinished_not_shown": max(0, len(unfinished) - _OPEN_SHOWN),
        }
        return json.dumps(summary)

    async def agent_cards(self) -> str:
        """The live agents' cards: who can do what right now, and how busy they are."""
        try:
            cards = await self.board.directory.cards()
        except AntsError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps([card.model_dump(mode="json") for card in cards])
