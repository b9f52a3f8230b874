"""Listing a large board: ``TaskBoard.recent(50)`` (what ``ants-nats tasks`` shows by default)
against reading every record (``all_tasks``, what ``tasks --all`` does), on one board of
``--tasks`` records, in the same run.

    .venv/bin/python bench/listing.py --tasks 50000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from ants_nats import EmbeddedServer, Task, TaskBoard

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
    r, f, a = (statistics.median(x) for x in (recent, filtered, everything))
    c, s = statistics.median(cli), statistics.median(startup)
    print(f"\nmedians of {repeat}, {tasks:,} tasks on the board")
    print(f"recent(50)                 {r * 1000:8.1f} ms   ({r / a:.4f} of reading every record)")
    print(f"recent(50), rare filter    {f * 1000:8.1f} ms   ({f / a:.4f})")
    print(f"all_tasks()                {a * 1000:8.1f} ms")
    print(
        f"ants-nats tasks --limit 50 {c * 1000:8.1f} ms   (the CLI starting alone, --help: {s * 1000:.0f} ms)"
    )


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
