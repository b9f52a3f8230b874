"""Listing a large board: ``TaskBoard.recent(50)`` (what ``ants-nats tasks`` shows by default)
against reading every record (``all_tasks``, what ``tasks --all`` does), on one board of
``--tasks`` records, in the same run; then the dashboard on that board: what a new tab receives
against every task's summary (what it received before), and its searches.

    .venv/bin/python bench/listing.py --tasks 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import aiohttp

from ants_nats import EmbeddedServer, Task, TaskBoard
from ants_nats.dashboard import Dashboard

CHUNK = 1000


async def main(tasks: int, repeat: int) -> None:
    async with EmbeddedServer() as server, TaskBoard.connect(server.url) as board:
        started = time.perf_counter()
        for start in range(0, tasks, CHUNK):
            await board.submit_many(
                [
                    Task(id=f"t{i:06d}", kind="list", payload={"i": i})
                    for i in range(start, min(start + CHUNK, tasks))
                ]
            )
        print(f"{tasks:,} tasks submitted in {time.perf_counter() - started:.1f} s", flush=True)
        recent, everything, filtered = [], [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            shown, held = await board.recent(50)
            recent.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await board.recent(
                50, lambda r: r.task.payload == {"i": 3}
            )  # a filter that matches one, far back
            filtered.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            every = await board.all_tasks()
            everything.append(time.perf_counter() - t0)
        assert len(shown) == 50 and held == tasks and len(every) == tasks
        cli, startup = [], []
        for _ in range(repeat):
            cli.append(
                await _timed(
                    sys.executable, "-m", "ants_nats.cli", "tasks", "--limit", "50", "--server", server.url
                )
            )
            startup.append(await _timed(sys.executable, "-m", "ants_nats.cli", "--help"))
        dashboard = await _dashboard(board, tasks, repeat)
    r, f, a = (statistics.median(x) for x in (recent, filtered, everything))
    c, s = statistics.median(cli), statistics.median(startup)
    print(f"\nmedians of {repeat}, {tasks:,} tasks on the board")
    print(f"recent(50)                 {r * 1000:8.1f} ms   ({r / a:.4f} of reading every record)")
    print(f"recent(50), rare filter    {f * 1000:8.1f} ms   ({f / a:.4f})")
    print(f"all_tasks()                {a * 1000:8.1f} ms")
    print(
        f"ants-nats tasks --limit 50 {c * 1000:8.1f} ms   (the CLI starting alone, --help: {s * 1000:.0f} ms)"
    )
    print(*dashboard, sep="\n")


async def _dashboard(board: TaskBoard, tasks: int, repeat: int) -> list[str]:
    """The dashboard's figures, as lines to print."""
    async with Dashboard(board) as dashboard, aiohttp.ClientSession() as http:
        started = time.perf_counter()
        tab = dashboard.hub.subscribe()  # woken by each change the dashboard's feeds bring
        try:
            while len(dashboard.state.tasks.summaries) < tasks:
                if await tab.next() is None:  # too far behind, so dropped: subscribe afresh
                    tab = dashboard.hub.subscribe()
        finally:
            dashboard.hub.unsubscribe(tab)
        indexed = time.perf_counter() - started
        every = len(json.dumps(list(dashboard.state.tasks.summaries.values()), separators=(",", ":")))
        async with http.get(f"{dashboard.url}api/snapshot") as response:
            snapshot = len(await response.read())
        lines = [
            f"dashboard: {tasks:,} tasks indexed in {indexed:.1f} s; a new tab receives "
            f"{snapshot / 1024:,.0f} KiB ({snapshot / every:.4f} of every summary, {every / 2**20:.1f} MiB)"
        ]
        searches = {
            "id prefix, 10 match": {"prefix": f"t{tasks // 10 - 1:05d}"},
            "status and kind, all match": {"status": "pending", "kind": "list"},
            "id prefix, none match": {"prefix": "zzz"},
        }
        for name, query in searches.items():
            took = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                async with http.get(f"{dashboard.url}api/tasks", params=query) as response:
                    await response.read()
                took.append(time.perf_counter() - t0)
            lines.append(f"dashboard search, {name:<27} {statistics.median(took) * 1000:8.1f} ms")
        return lines


async def _timed(*command: str) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return time.perf_counter() - started


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    asyncio.run(main(opts.tasks, opts.repeat))
