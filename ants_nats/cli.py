"""The ``ants-nats`` command line.

Every command that talks to NATS takes ``--server URL`` (default ``$ANTS_NATS_URL``, else
``nats://127.0.0.1:4222``); reading commands take ``--json``. Bad input or an unreachable server is
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, aclosing
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import pydantic
import yaml
from pydantic import JsonValue

from . import __version__
from ._aio import interruptible, stopping_on_signals
from .a2a import a2a_card
from .access import server_config
from .agent_protocol import via_agent_protocol
from .board import BoardConfig, TaskBoard
from .context import Handler, TaskContext
from .dashboard import Dashboard, run_dashboard
from .demo import BYTES_PER_TOKEN, HANDLERS, SWARM, AgentSpec, DemoSummary, agent_for, run_demo
from .errors import AntsError, InvalidSchedule, InvalidTask
from .identity import Identity, read_seed
from .ledger import Ledger
from .log import configure_logging
from .mcp import add_arguments as add_mcp_arguments
from .mcp import run as run_mcp
from .models import AgentCard, AgentLedger, Limit, Schedule, Task, TaskRecord, TaskStatus, utcnow
from .server import EmbeddedServer, monitor_json
from .views import (
    agents_table,
    event_line,
    limits_table,
    reputation_table,
    schedules_table,
    tasks_table,
    usage_table,
)

EXIT_NOT_DONE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DEFAULT_URL = "nats://127.0.0.1:4222"
DEMO_DEADLINE_S = 55.0
"""The demo promises to finish within a minute; past this it stops with an error."""


class _Parser(argparse.ArgumentParser):
    """An argument error is one line (``ants-nats: error: ...``) and exit 2, as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"ants-nats: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ants-nats", description="Leaderless work division on NATS JetStream.")
    parser.add_argument("--version", action="version", version=f"ants-nats {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("ANTS_LOG_LEVEL", "WARNING"))
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, text: str, *, server: bool = True, json_out: bool = False, under: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = under.add_parser(name, help=text, description=text)
        if server:
            p.add_argument("--server", default=os.environ.get("ANTS_NATS_URL", DEFAULT_URL), help="NATS URL")
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    demo = sub.add_parser("demo", help="run a demo swarm on an embedded server and report")
    demo.add_argument("--documents", type=int, default=8, help="documents in the pipeline (default 8)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the unreliable agent's failures")
    demo.add_argument("--server", default=os.environ.get("ANTS_NATS_URL"), help="use this server instead")
    demo.add_argument("--dashboard", action="store_true", help="serve the live dashboard; stay up after")

    server = command("server", "run an embedded JetStream server until Ctrl-C", server=False)
    server.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    server.add_argument("--store", type=Path, default=None, help="JetStream store directory")

    agent = command("agent", "run one agent until SIGINT/SIGTERM")
    agent.add_argument("--name", default="agent")
    agent.add_argument("--cap", action="append", default=[], help="a capability (repeatable)")
    agent.add_argument("--capacity", type=int, default=2)
    agent.add_argument("--lease-ttl", type=float, default=BoardConfig.lease_ttl)
    agent.add_argument("--demo", action="store_true", help="handle the demo pipeline's task kinds")
    agent.add_argument("--fail-rate", type=float, default=0.0, help="fail this share of tasks (unreliable)")
    agent.add_argument("--abandon", action="store_true", help="claim work and abandon it (adversarial)")
    agent.add_argument("--seed", type=int, default=0)
    agent.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="P",
        help="serve Prometheus metrics on 127.0.0.1:P/metrics (0: a free port, printed)",
    )
    agent.add_argument(
        "--via-agent-protocol",
        metavar="AGENT",
        help="handle 'prompt' tasks by prompting this Synadia Agent Protocol agent (agent[.owner[.name]])",
    )

    _task_commands(command)
    _schedule_commands(command, sub)
    _spending_commands(command, sub)

    command("tasks", "list the tasks on the board", json_out=True)
    agents = command("agents", "list the live agents and their load", json_out=True)
    agents.add_argument("--a2a", action="store_true", help="print each as an A2A (v0.3) agent card, in JSON")
    command("reputation", "list reputation scores per agent and capability", json_out=True)
    trail = command("trail", "print trail events", json_out=True)
    trail.add_argument("--subject", default="ants.trail.>", help="subject filter")
    trail.add_argument("--follow", action="store_true", help="keep printing new events")

    add_mcp_arguments(command("mcp", "serve the board to MCP clients (stdio or Streamable HTTP)"))

    dashboard = command("dashboard", "serve a live, read-only web dashboard of the swarm on 127.0.0.1")
    dashboard.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    dashboard.add_argument("--seed", type=Path, default=None, help="nkeys seed file (an observer's will do)")

    config = command("config", "generate a server configuration with one nkey user per agent", server=False)
    config.add_argument("--agent", action="append", default=[], help="agent id (repeatable)")
    config.add_argument("--observer", action="append", default=[], help="read-only user name (repeatable)")
    config.add_argument(
        "--ledger", action="append", default=[], help="ledger service user, the only writer of the ledger"
    )
    config.add_argument("--out", type=Path, required=True, help="directory for nats-server.conf and seeds")
    return parser


Command = Callable[..., argparse.ArgumentParser]


def _task_commands(command: Command) -> None:
    """The commands that act on tasks: submit, retry, get, wait, cancel, answer."""
    submit = command(
        "submit", "submit tasks from a JSON or YAML file (a task or a list) or from flags", json_out=True
    )
    submit.add_argument("file", nargs="?", help="JSON or YAML (.yaml/.yml) file, or - for JSON on stdin")
    submit.add_argument("--id")
    _task_flags(submit)
    submit.add_argument("--depends-on", action="append", default=[], help="dependency id (repeatable)")
    submit.add_argument("--at", help="not before this time (ISO 8601 with a time zone)")
    submit.add_argument("--in", dest="after", help="not before this long from now (30s, 5m, 2h, 1d)")
    submit.add_argument(
        "--wait", action="store_true", help="wait until the tasks finish; exit 1 if any failed"
    )
    submit.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds")

    retry = command("retry", "put a failed or dead task back with a fresh attempt budget", json_out=True)
    retry.add_argument("id", help="task id")

    get = command("get", "show one task's record and result", json_out=True)
    get.add_argument("id", help="task id")

    wait = command("wait", "wait until tasks finish: exit 0 if all are done, 1 if any is not", json_out=True)
    wait.add_argument("ids", nargs="+", metavar="ID", help="task ids")
    wait.add_argument("--timeout", type=float, default=None, help="give up after S seconds (exit 2)")

    cancel = command("cancel", "cancel a pending, waiting or claimed task", json_out=True)
    cancel.add_argument("id", help="task id")
    cancel.add_argument("--reason", default="cancelled from the command line")

    answer = command(
        "answer", "answer the question a task waits on (it becomes claimable again)", json_out=True
    )
    answer.add_argument("id", help="task id")
    answer.add_argument("text", help="the answer")
    answer.add_argument("--by", default=None, help="who answers (kept in the record)")
    answer.add_argument(
        "--question", type=int, default=None, metavar="N", help="answer only if question N (from 0) is open"
    )


def _task_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe a task, shared by ``submit`` and ``schedule add``."""
    p.add_argument("--kind")
    p.add_argument("--require", action="append", default=[], help="required capability (repeatable)")
    p.add_argument("--payload", default="null", help="payload as JSON")
    p.add_argument("--priority", type=int, default=0, help="above 0: the route's express lane")


def _schedule_commands(command: Command, sub: Any) -> None:
    """``schedule add|ls|rm``: tasks the NATS server submits on a schedule."""
    text = "tasks the NATS server submits on a schedule: add, ls, rm"
    schedule = sub.add_parser("schedule", help=text, description=text)
    under = schedule.add_subparsers(dest="schedule_command", required=True)
    add = command(
        "add",
        "add or replace a schedule; each firing submits task NAME-<UTC time>",
        json_out=True,
        under=under,
    )
    add.add_argument("name", help="schedule name (1-111 of A-Z a-z 0-9 _ -)")
    add.add_argument("when", help="'@every 30s', '@hourly', a cron line such as '0 3 * * *', or '@at TIME'")
    add.add_argument("file", nargs="?", help="the task template as JSON or YAML, or - for JSON on stdin")
    _task_flags(add)
    command("ls", "list the schedules", json_out=True, under=under)
    rm = command("rm", "remove a schedule (the tasks it submitted stay)", under=under)
    rm.add_argument("name", help="schedule name")


def _spending_commands(command: Command, sub: Any) -> None:
    """``limit set|ls|rm`` (rate limits shared by every agent serving a capability) and ``usage``
    (what work spent)."""
    usage = command("usage", "what work spent: per agent and capability, or under one task", json_out=True)
    usage.add_argument("--task", metavar="ROOT", help="the task and every task under it (its dependents)")
    usage.add_argument("--agent", help="only this agent")

    text = "rate limits shared by every agent serving a capability: set, ls, rm"
    limit = sub.add_parser("limit", help=text, description=text)
    under = limit.add_subparsers(dest="limit_command", required=True)
    add = command("set", "set (or replace) the limit on a capability", json_out=True, under=under)
    add.add_argument("capability")
    add.add_argument("--per-minute", type=int, default=None, metavar="N", help="handler runs a minute")
    add.add_argument(
        "--tokens-per-minute", type=int, default=None, metavar="N", help="reported tokens a minute"
    )
    add.add_argument("--requests", type=int, default=None, metavar="N", help="handler runs per --interval")
    add.add_argument("--tokens", type=int, default=None, metavar="N", help="reported tokens per --interval")
    add.add_argument("--interval", type=float, default=None, metavar="S", help="with --requests/--tokens")
    command("ls", "list the rate limits", json_out=True, under=under)
    rm = command("rm", "lift the limit on a capability", under=under)
    rm.add_argument("capability")


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# ------------------------------------------------------------------- demo and server


def _report(summary: DemoSummary) -> None:
    total = len(summary.records)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.by_status.items()))
    print(f"\n{total} tasks in {summary.seconds:.1f}s: {statuses}; {summary.retries} redone")
    print("\nwork done by agent:")
    for agent, n in sorted(summary.work_by_agent.items()):
        print(f"  {agent:28s} {n:3d}")
    print("\nreputation:")
    print(reputation_table(summary.ledgers, utcnow(), BoardConfig().reputation.half_life))
    if summary.messages is not None and summary.bytes is not None and total:
        print(
            f"\ncoordination: {summary.messages / total:.1f} messages and "
            f"{summary.bytes / total / 1024:.1f} KiB through the server per task"
        )
    usage, share = summary.usage, summary.coordination_share
    if usage:
        print(f"work: {usage.tokens_in} tokens in and {usage.tokens_out} out, as the handlers reported them")
    if share is not None:
        print(
            f"coordination's share: {share:.1%} of all units "
            f"(its bytes counted as tokens of {BYTES_PER_TOKEN} bytes each)"
        )


async def _demo(args: argparse.Namespace) -> int:
    if args.documents < 1:
        raise InvalidTask("--documents must be at least 1")
    print(f"ants-nats demo: {len(SWARM)} agent processes, {args.documents * 3 + 1} tasks")

    async def run(url: str, traffic: Callable[[], Awaitable[tuple[int, int]]] | None) -> DemoSummary:
        async with AsyncExitStack() as stack:
            if args.dashboard:
                board = await stack.enter_async_context(TaskBoard.connect(url, name="ants-nats-dashboard"))
                dashboard = await stack.enter_async_context(Dashboard(board))
                print(f"dashboard at {dashboard.url}", flush=True)
            async with asyncio.timeout(DEMO_DEADLINE_S):
                summary = await run_demo(
                    url, documents=args.documents, seed=args.seed, say=print, traffic=traffic
                )
            _report(summary)
            if args.dashboard:
                stop = asyncio.Event()
                with stopping_on_signals(stop.set):  # listening before saying so
                    print(f"\nthe dashboard stays up at {dashboard.url}; Ctrl-C stops it", flush=True)
                    await stop.wait()
        return summary

    # Ctrl-C stops the demo for good (its processes included) and exits 130, whatever it was doing.
    summary = await interruptible(_run_demo_somewhere(args, run))
    return 0 if summary.by_status.get("done", 0) == len(summary.records) else 1


async def _run_demo_somewhere(
    args: argparse.Namespace,
    run: Callable[[str, Callable[[], Awaitable[tuple[int, int]]] | None], Awaitable[DemoSummary]],
) -> DemoSummary:
    if args.server:
        return await run(args.server, None)
    else:
        async with EmbeddedServer() as server:
            print(f"embedded JetStream server at {server.url}")

            async def traffic() -> tuple[int, int]:
                varz = await monitor_json(server.monitor_port, "/varz")
                return int(varz["in_msgs"]) + int(varz["out_msgs"]), int(varz["in_bytes"]) + int(
                    varz["out_bytes"]
                )

            return await run(server.url, traffic)


async def _server(args: argparse.Namespace) -> int:
    # SIGTERM (systemd, docker stop) stops it as Ctrl-C does: the child server and its temporary
    # store go with it. Listening before the server starts: a signal may come once it is announced.
    stop = asyncio.Event()
    with stopping_on_signals(stop.set):
        async with EmbeddedServer(store_dir=args.store, port=args.port) as server:
            print(f"nats-server with JetStream at {server.url} (store {server.store_dir}); Ctrl-C stops it")
            sys.stdout.flush()
            await stop.wait()
    return 0


async def _agent(args: argparse.Namespace) -> int:
    spec = AgentSpec(args.name, tuple(args.cap), fail_rate=args.fail_rate, abandons=args.abandon)
    async with TaskBoard.connect(args.server, BoardConfig(lease_ttl=args.lease_ttl), name=args.name) as board:
        handlers: dict[str, Handler] = HANDLERS if args.demo else {"echo": _echo}
        if args.via_agent_protocol:
            handlers = {**handlers, "prompt": via_agent_protocol(board.nc, args.via_agent_protocol)}
        agent = agent_for(
            board,
            spec,
            seed=args.seed,
            handlers=handlers,
            capacity=args.capacity,
            metrics_port=args.metrics_port,
        )
        async with agent:
            print(
                f"agent {agent.id} serving {', '.join(sorted(agent.capabilities)) or 'anything'}", flush=True
            )
            if agent.metrics_url is not None:
                print(f"metrics at {agent.metrics_url}", flush=True)
            await agent.run()
    return 0


async def _echo(task: Task, ctx: TaskContext) -> JsonValue:
    return task.payload


# ------------------------------------------------------------------- reading and writing


def _tasks_from(args: argparse.Namespace) -> list[Any]:
    if args.file:
        data = _document(args.file)
        return data if isinstance(data, list) else [data]
    if not (args.id and args.kind):
        raise InvalidTask("give a JSON file, or at least --id and --kind")
    task = _task_from_flags(args)
    task.update(id=args.id, depends_on=args.depends_on, not_before=_not_before(args.at, args.after))
    return [task]


def _task_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The task the shared task flags describe (``_task_flags``)."""
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise InvalidTask(f"--payload is not JSON: {exc.msg}") from exc
    return {"kind": args.kind, "requires": args.require, "payload": payload, "priority": args.priority}


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _not_before(at: str | None, after: str | None) -> str | None:
    """``--at`` as given (the task model checks it), or ``--in`` from now, as ISO 8601."""
    if at is not None and after is not None:
        raise InvalidTask("give --at or --in, not both")
    if after is None:
        return at
    match = _DURATION.match(after.strip())
    if match is None:
        raise InvalidTask(f"--in {after!r}: use a number with s, m, h or d, e.g. 30s")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    return (utcnow() + timedelta(seconds=seconds)).isoformat()


Rows = Sequence[pydantic.BaseModel]


async def _show(
    args: argparse.Namespace,
    read: Callable[[TaskBoard], Awaitable[Rows]],
    render: Callable[[Rows], str],
) -> Rows:
    """Read rows from the board and print them as a table, or as JSON with ``--json``."""
    async with TaskBoard.connect(args.server, name="ants-nats-cli") as board:
        rows = await read(board)
    if args.json:
        _emit_json([row.model_dump(mode="json") for row in rows])
    else:
        print(render(rows))
    return rows


def _render_tasks(rows: Rows) -> str:
    return tasks_table(row for row in rows if isinstance(row, TaskRecord))


def _document(name: str) -> Any:
    """The JSON or YAML document in file ``name`` (``-``: JSON on stdin)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTask(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    return _parse_document(name, text)


def _parse_document(name: str, text: str) -> Any:
    """JSON, or YAML for ``.yaml``/``.yml`` files."""
    if name.endswith((".yaml", ".yml")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidTask(f"{name}: not YAML ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidTask(f"{name}: not JSON ({exc.msg} at line {exc.lineno})") from exc


async def _submit(args: argparse.Namespace) -> int:
    tasks = _tasks_from(args)

    async def submit(board: TaskBoard) -> Rows:
        records = await board.submit_many(tasks)
        if not args.wait:
            return records
        final = await board.wait([r.task.id for r in records], timeout=args.timeout)
        return [final[r.task.id] for r in records]

    shown = await _show(args, submit, _render_tasks)
    return _exit_for(shown) if args.wait else 0


async def _retry(args: argparse.Namespace) -> int:
    async def retry(board: TaskBoard) -> Rows:
        return [await board.retry(args.id)]

    await _show(args, retry, _render_tasks)
    return 0


async def _get(args: argparse.Namespace) -> int:
    async def get(board: TaskBoard) -> Rows:
        record = await board.get(args.id)
        if record.result_ref is not None:  # show the result itself, read from the artifact store
            record = record.model_copy(update={"result": await board.result_of(record)})
        return [record]

    await _show(args, get, _render_tasks)
    return 0


async def _wait(args: argparse.Namespace) -> int:
    async def wait(board: TaskBoard) -> Rows:
        for task_id in args.ids:
            await board.get(task_id)  # an unknown id is an error now, not a wait until the timeout
        final = await board.wait(args.ids, timeout=args.timeout)
        return [final[task_id] for task_id in args.ids]

    return _exit_for(await _show(args, wait, _render_tasks))


def _exit_for(rows: Rows) -> int:
    """0 when every task is done, 1 when any ended otherwise."""
    done = all(isinstance(r, TaskRecord) and r.status is TaskStatus.DONE for r in rows)
    return 0 if done else EXIT_NOT_DONE


async def _cancel(args: argparse.Namespace) -> int:
    async def cancel(board: TaskBoard) -> Rows:
        return [await board.cancel(args.id, args.reason)]

    await _show(args, cancel, _render_tasks)
    return 0


async def _answer(args: argparse.Namespace) -> int:
    async def answer(board: TaskBoard) -> Rows:
        return [await board.answer(args.id, args.text, question=args.question, by=args.by)]

    await _show(args, answer, _render_tasks)
    return 0


async def _removing(
    args: argparse.Namespace, remove: Callable[[TaskBoard], Awaitable[None]], said: str
) -> int:
    """Run a command that removes something from the board, then say so."""
    async with TaskBoard.connect(args.server, name="ants-nats-cli") as board:
        await remove(board)
    print(said)
    return 0


async def _schedule(args: argparse.Namespace) -> int:
    if args.schedule_command == "rm":
        return await _removing(
            args, lambda board: board.unschedule(args.name), f"removed schedule {args.name}"
        )

    async def read(board: TaskBoard) -> Rows:
        if args.schedule_command == "ls":
            return await board.schedules()
        if args.file:
            template = _document(args.file)
            if not isinstance(template, dict):
                raise InvalidSchedule(f"{args.file}: the template must be one task (a mapping)")
        elif args.kind:
            template = _task_from_flags(args)
        else:
            raise InvalidSchedule("give the task template as a file, or at least --kind")
        return [await board.schedule(args.name, args.when, template)]

    await _show(args, read, lambda rows: schedules_table(r for r in rows if isinstance(r, Schedule)))
    return 0


async def _limit(args: argparse.Namespace) -> int:
    if args.limit_command == "rm":
        capability = args.capability
        return await _removing(
            args, lambda board: board.remove_limit(capability), f"lifted the limit on {capability}"
        )

    async def read(board: TaskBoard) -> Rows:
        if args.limit_command == "ls":
            return await board.limits()
        per_minute = args.per_minute is not None or args.tokens_per_minute is not None
        if per_minute and (args.requests is not None or args.tokens is not None or args.interval is not None):
            raise InvalidTask("give --per-minute/--tokens-per-minute, or --requests/--tokens with --interval")
        if per_minute:
            limit = {"requests": args.per_minute, "tokens": args.tokens_per_minute, "per": 60.0}
        else:
            limit = {"requests": args.requests, "tokens": args.tokens, "per": args.interval or 60.0}
        return [await board.set_limit(args.capability, **limit)]

    await _show(args, read, lambda rows: limits_table(r for r in rows if isinstance(r, Limit)))
    return 0


async def _usage(args: argparse.Namespace) -> int:
    async with TaskBoard.connect(args.server, name="ants-nats-cli") as board:
        if args.task:
            total = await board.usage(args.task)
            rows = [(f"task {args.task} and under", "*", total)]
        else:
            ledgers = [x for x in await Ledger(board.nc).all() if args.agent in (None, x.agent)]
            rows = [(x.agent, cap, spent) for x in ledgers for cap, spent in sorted(x.usage.items())]
    if args.json:
        _emit_json([{"who": who, "capability": cap, **spent.model_dump()} for who, cap, spent in rows])
    else:
        print(usage_table(rows))
    return 0


async def _tasks(args: argparse.Namespace) -> int:
    await _show(args, lambda board: board.all_tasks(), _render_tasks)
    return 0


async def _agents(args: argparse.Namespace) -> int:
    if args.a2a:
        async with TaskBoard.connect(args.server, name="ants-nats-cli") as board:
            cards = await board.directory.cards()
        _emit_json([a2a_card(card, server_url=args.server) for card in cards])
        return 0
    await _show(
        args,
        lambda board: board.directory.cards(),
        lambda rows: agents_table(row for row in rows if isinstance(row, AgentCard)),
    )
    return 0


async def _reputation(args: argparse.Namespace) -> int:
    half_life = BoardConfig().reputation.half_life
    rows = await _show(
        args,
        lambda board: Ledger(board.nc).all(),
        lambda rows: reputation_table(
            (row for row in rows if isinstance(row, AgentLedger)), utcnow(), half_life
        ),
    )
    if not rows and not args.json:
        print("(no scores yet: they come from the ledger service, ants-ledger, following the trail)")
    return 0


async def _trail(args: argparse.Namespace) -> int:
    async with TaskBoard.connect(args.server, name="ants-nats-cli") as board:
        if not args.follow:
            for event in await board.trail.replay(args.subject):
                print(event.model_dump_json() if args.json else event_line(event))
            return 0
        async with aclosing(board.trail.follow(args.subject)) as events:
            async for event in events:
                print(event.model_dump_json() if args.json else event_line(event), flush=True)
    return 0


async def _dashboard(args: argparse.Namespace) -> int:
    seed = read_seed(args.seed) if args.seed else None
    return await run_dashboard(
        args.server, port=args.port, seed=seed, say=lambda line: print(line, flush=True)
    )


async def _config(args: argparse.Namespace) -> int:
    if not args.agent and not args.observer and not args.ledger:
        raise InvalidTask("name at least one --agent, --observer or --ledger")
    identities = {name: Identity.generate() for name in [*args.agent, *args.observer, *args.ledger]}
    text = server_config(
        {a: identities[a].public_key for a in args.agent},
        {o: identities[o].public_key for o in args.observer},
        {name: identities[name].public_key for name in args.ledger},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nats-server.conf").write_text(text)
    for name, identity in identities.items():
        seed_file = args.out / f"{name}.seed"
        seed_file.write_text(identity.seed + "\n")
        seed_file.chmod(0o600)
    print(f"wrote {args.out / 'nats-server.conf'} and {len(identities)} seed file(s) (mode 600)")
    print("start: nats-server -js -c nats-server.conf; connect each agent with its seed")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "demo": _demo,
    "server": _server,
    "agent": _agent,
    "submit": _submit,
    "cancel": _cancel,
    "answer": _answer,
    "limit": _limit,
    "usage": _usage,
    "get": _get,
    "retry": _retry,
    "wait": _wait,
    "schedule": _schedule,
    "tasks": _tasks,
    "agents": _agents,
    "reputation": _reputation,
    "trail": _trail,
    "dashboard": _dashboard,
    "mcp": run_mcp,
    "config": _config,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-nats``; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(json=args.json_logs, level=args.log_level)
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except BrokenPipeError:
        # The reader went away (``| head``): nothing is wrong, and nothing more is to be said.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TimeoutError:  # before OSError, which it is a kind of
        print(f"ants-nats: error: {args.command} did not finish in time", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (AntsError, OSError) as exc:
        print(f"ants-nats: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except pydantic.ValidationError as exc:
        print(f"ants-nats: error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ants-nats: interrupted, stopped cleanly", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
