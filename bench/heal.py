"""Resume after a heal: on a 3-node R3 cluster with one agent per node and a steady trickle of tasks
submitted through every node, each round isolates one member (cuts every route to and from it,
rotating which) for longer than the lease, heals it, and times what comes back when.

From the heal: every member knowing the JetStream meta leader, each stream and consumer the agents
use having one leader all members agree on (``/jsz`` on the monitoring ports, polled every 50 ms),
the first task taken by anyone, and each agent's first task taken (the isolated node's and the
others'). During the isolation: the longest gap between tasks taken on the majority side. Medians
over rounds, then a check that no submitted task was lost or run twice.

    .venv/bin/python bench/heal.py --rounds 3
    .venv/bin/python bench/heal.py --rounds 1 --trace   # agents' debug logs, task stacks at heal+1 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the loopback network

from ants_nats import Agent, BoardConfig, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.log import configure_logging, get_logger
from ants_nats.server import monitor_json
from tests.network import PartitionedCluster

log = get_logger("bench.heal")

META = "meta"
ASSETS = (META, "KV_ants_tasks", "ANTS_WORK", "ANTS_WORK/work_work", "ANTS_TRAIL")
"""The raft groups an agent's work goes through: the meta group (API requests), the task records,
the tickets and their consumer, the trail."""
_POLL_S = 0.05
_SUBMIT_EVERY_S = 0.03
_SUBMIT_TIMEOUT_S = 5.0
_SUBMITS_IN_FLIGHT = 4
"""Per node: enough that one stuck behind an election does not stop the trickle, few enough that
a long outage does not pile up readers of the agents' cards."""


@dataclass
class Run:
    """What one run saw: leaders per asset as each member reports them, tasks taken, submissions."""

    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, dict[str, list[str | None]]]] = field(default_factory=list)
    """(time, the leader each member names, per asset)."""
    taken: list[tuple[float, int, str]] = field(default_factory=list)
    """(time, agent index, task id) for every handler run."""
    submitted: set[str] = field(default_factory=set)
    submit_times: list[float] = field(default_factory=list)
    failed_submits: dict[str, int] = field(default_factory=dict)
    """Failed submissions, by error."""

    def agreed_since(
        self, asset: str, start: float, end: float, members: set[int], names: list[str]
    ) -> float | None:
        """Seconds from ``start`` until ``members`` named one leader among them for ``asset``, for
        good (up to ``end``)."""
        since: float | None = None
        for at, leaders in self.samples:
            if at < start or at > end:
                continue
            named = {leaders[asset][i] for i in members}
            if len(named) == 1 and named <= {names[i] for i in members}:
                since = at if since is None else since
            else:
                since = None
        return None if since is None else since - start


def _leaders(jsz: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    yield META, (jsz.get("meta_cluster") or {}).get("leader")
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            yield stream["name"], (stream.get("cluster") or {}).get("leader")
            for consumer in stream.get("consumer_detail") or []:
                yield f"{stream['name']}/{consumer['name']}", (consumer.get("cluster") or {}).get("leader")


async def watch_leaders(cluster: PartitionedCluster, run: Run) -> None:
    """Sample, every ``_POLL_S``, whether all members name the same leader for each asset."""
    while True:
        documents = await asyncio.gather(
            *(
                monitor_json(server.monitor_port, "/jsz?streams=true&consumers=true")
                for server in cluster.servers
            )
        )
        seen = [dict(_leaders(jsz)) for jsz in documents]
        # Every replicated stream of the board and the work consumers (not the clients' own
        # single-replica consumers, which live on one member).
        tracked = {a for member in seen for a in member if "/" not in a or a.startswith("ANTS_WORK/work_")}
        named = {asset: [member.get(asset) for member in seen] for asset in sorted(tracked | set(ASSETS))}
        if run.samples and run.samples[-1][1] != named:
            changed = {a: v for a, v in named.items() if run.samples[-1][1][a] != v}
            log.debug("bench.leaders", **{a: ",".join(str(n) for n in v) for a, v in changed.items()})
        run.samples.append((time.monotonic(), named))
        await asyncio.sleep(_POLL_S)


async def feed(board: TaskBoard, node: int, run: Run, stop: asyncio.Event) -> None:
    """Submit a task through ``board`` every ``_SUBMIT_EVERY_S``, each on its own (a submission
    stuck behind an election must not hold back the next)."""

    async def one(task_id: str) -> None:
        try:
            async with asyncio.timeout(_SUBMIT_TIMEOUT_S):
                await board.submit(Task(id=task_id, kind="work", requires=("work",)))
            run.submitted.add(task_id)
            run.submit_times.append(time.monotonic())
        except Exception as exc:  # an unanswered submission is what the bench provokes
            error = f"{type(exc).__name__}: {str(exc)[:60]}"
            run.failed_submits[error] = run.failed_submits.get(error, 0) + 1

    pending: set[asyncio.Task[None]] = set()
    n = 0
    while not stop.is_set():
        if len(pending) >= _SUBMITS_IN_FLIGHT:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            continue
        task = asyncio.create_task(one(f"n{node}-{n}"))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        await asyncio.sleep(_SUBMIT_EVERY_S)
    await asyncio.gather(*pending)


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines ``task`` is suspended in, outermost first (``Task.get_stack``
    shows only the outermost frame of a suspended task)."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(chain) < 24:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        frame = frame or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "ag_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
        )
    return chain


def dump_stacks(label: str) -> None:
    """Where each agent's tasks wait (what they are blocked on)."""
    print(f"--- task stacks at {label}", file=sys.stderr)
    for task in asyncio.all_tasks():
        if task.get_name().startswith("ant"):
            print(f"  {task.get_name()}: {' > '.join(_awaiting(task))}", file=sys.stderr)


async def until_taken_by_all(run: Run, since: float, agents: int, timeout: float) -> None:
    """Until every agent has taken a task after ``since`` (or ``timeout`` passed)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while {i for at, i, _ in run.taken if at > since} != set(range(agents)):  # noqa: ASYNC110
                await asyncio.sleep(_POLL_S)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in ``[start, end]`` without any of ``times``."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


async def bench(rounds: int, lease_ttl: float, isolation: float, trace: bool) -> None:  # noqa: PLR0915
    config = BoardConfig(replicas=3, lease_ttl=lease_ttl)
    run = Run()
    rows: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with PartitionedCluster(Path(tmp)) as cluster, AsyncExitStack() as stack:
            boards = [
                await stack.enter_async_context(TaskBoard.connect(url, config, name=f"heal-n{i}"))
                for i, url in enumerate(cluster.urls)
            ]

            def handler(index: int) -> Any:
                async def work(task: Task, ctx: TaskContext) -> JsonValue:
                    run.taken.append((time.monotonic(), index, task.id))
                    return index

                return work

            for i, board in enumerate(boards):
                agent = Agent(board, name=f"ant{i}", capabilities=["work"], capacity=4)
                agent.handler("work")(handler(i))
                await stack.enter_async_context(agent)
            watcher = asyncio.create_task(watch_leaders(cluster, run))
            stop = asyncio.Event()
            feeders = [asyncio.create_task(feed(b, i, run, stop)) for i, b in enumerate(boards)]
            await until_taken_by_all(run, time.monotonic(), len(boards), 30.0)
            for r in range(rounds):
                victim = (2 - r) % len(boards)
                isolated = time.monotonic()
                cluster.isolate(victim)
                log.info("bench.isolated", member=victim)
                await asyncio.sleep(isolation)
                healed = time.monotonic()
                cluster.heal()
                log.info("bench.healed", member=victim)
                if trace:
                    await asyncio.sleep(1.0)
                    dump_stacks(f"round {r}, heal + 1 s")
                await until_taken_by_all(run, healed, len(boards), 30.0)
                await asyncio.sleep(2.0)  # leaders that change again soon after count
                end = time.monotonic()
                row: dict[str, float | None] = {"round": r, "isolated": victim}
                names = [server.name for server in cluster.servers]
                everyone = set(range(len(boards)))
                majority = everyone - {victim}
                # During the isolation: when the majority side had leaders of its own.
                during = [run.agreed_since(a, isolated, healed, majority, names) for a in run.samples[-1][1]]
                row["majority leaders"] = None if None in during else max(x for x in during if x is not None)
                for asset in ASSETS:
                    row[asset] = run.agreed_since(asset, healed, end, everyone, names)
                tracked = run.samples[-1][1]
                leaders = [run.agreed_since(a, healed, end, everyone, names) for a in tracked]
                row["all leaders"] = None if None in leaders else max(x for x in leaders if x is not None)
                slowest = max(tracked, key=lambda a: run.agreed_since(a, healed, end, everyone, names) or 99)
                log.info("bench.last_leader", asset=slowest, after_heal=row["all leaders"])
                after = [(at - healed, i) for at, i, _ in run.taken if at > healed]
                submits = [t - healed for t in run.submit_times if t > healed]
                row["first submitted"] = min(submits, default=None)
                row["first taken"] = min((t for t, _ in after), default=None)
                for i in range(len(boards)):
                    first = min((t for t, j in after if j == i), default=None)
                    row["isolated agent" if i == victim else f"agent {i}"] = first
                others = [at for at, i, _ in run.taken if i != victim]
                if row["all leaders"] is not None and row["isolated agent"] is not None:
                    row["isolated lag"] = row["isolated agent"] - row["all leaders"]
                row["majority gap"] = longest_gap(others, isolated, healed)
                if row["majority leaders"] is not None:
                    elected = isolated + row["majority leaders"]
                    resumed = min((t for t in others if t >= elected), default=None)
                    row["majority resumed"] = None if resumed is None else resumed - isolated
                rows.append(row)
                print(_row_text(row), flush=True)
            stop.set()
            await asyncio.gather(*feeders)
            final = await boards[0].wait(sorted(run.submitted), timeout=60)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    _summary(rows, run, final)


def _row_text(row: dict[str, float | None]) -> str:
    return "  ".join(f"{k}={'-' if v is None else round(v, 2)}" for k, v in row.items())


def _summary(rows: list[dict[str, float | None]], run: Run, final: dict[str, Any]) -> None:
    print(f"\nmedians over {len(rows)} rounds, seconds after the heal ('majority ...': from the cut)")
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in ("round", "isolated")))
    keys = [k for k in keys if not k.startswith("agent ")] + ["other agents"]
    for key in keys:
        if key == "other agents":
            values = [v for row in rows for k, v in row.items() if k.startswith("agent ") and v is not None]
        else:
            values = [v for row in rows if (v := row.get(key)) is not None]
        median = round(statistics.median(values), 2) if values else None
        print(f"  {key:24} {median}  (max {round(max(values), 2) if values else None})")
    runs: dict[str, int] = {}
    for _, _, task_id in run.taken:
        runs[task_id] = runs.get(task_id, 0) + 1
    done = sum(1 for r in final.values() if r.status is TaskStatus.DONE)
    print(
        f"\n{len(run.submitted)} tasks submitted, {done} done, "
        f"{sum(1 for n in runs.values() if n > 1)} run more than once; "
        f"submissions failed: {run.failed_submits}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=4.0)
    parser.add_argument(
        "--isolation",
        type=float,
        default=10.0,
        help="seconds each member stays isolated (past the 9 s longest election timeout)",
    )
    parser.add_argument("--trace", action="store_true", help="debug logs, task stacks at heal + 1 s")
    args = parser.parse_args()
    configure_logging(level="DEBUG" if args.trace else "WARNING")
    asyncio.run(bench(args.rounds, args.lease_ttl, args.isolation, args.trace))


if __name__ == "__main__":
    main()
