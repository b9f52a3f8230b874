"""Submit and wait for one task, as a caller that wants one answer does: ``board.run(task)``
(the wait hears the task's ending on the trail through a plain subscription), against ``submit``
then ``wait([id])`` (a watch opened per task, what ``result`` did before), and taskiq-nats' idle
latency (submit -> the worker finished, seen in the worker's process), measured in the same run,
alternating, with 4 idle agents (taskiq: its bench worker).

    .venv/bin/python bench/one.py --samples 200 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import _taskiq
from _ants import _board, _swarm

from ants_nats import Task

AGENTS = 4


async def ants(samples: int, *, run: bool) -> list[float]:
    """Seconds from submitting to holding the result, one task at a time."""
    took = []
    async with _board() as (_, board), _swarm(board, AGENTS):
        for i in range(samples):
            task = Task(id=f"one{i:05d}", kind="noop", created_by="bench")
            started = time.perf_counter()
            if run:
                await board.run(task, timeout=10)
            else:
                await board.submit(task)
                await board.wait([task.id], timeout=10)
            took.append(time.perf_counter() - started)
    return took


async def main(samples: int, repeat: int) -> None:
    p50: dict[str, list[float]] = {"run": [], "submit+wait": [], "taskiq": []}
    for round_ in range(repeat):
        p50["run"].append(statistics.median(await ants(samples, run=True)))
        p50["submit+wait"].append(statistics.median(await ants(samples, run=False)))
        latency, _ = await _taskiq.idle_latency(samples)
        p50["taskiq"].append(latency.p50 / 1000)  # (Latency gives milliseconds)
        print(
            f"  round {round_ + 1}/{repeat}: "
            + ", ".join(f"{k} {v[-1] * 1000:.2f} ms" for k, v in p50.items())
        )
    taskiq = statistics.median(p50["taskiq"])
    print(f"\nsubmit and wait for one task, p50 (median of {repeat} rounds of {samples})")
    for name, values in p50.items():
        value = statistics.median(values)
        print(f"{name:<12} {value * 1000:7.2f} ms   {value / taskiq:5.2f} x taskiq")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    asyncio.run(main(opts.samples, opts.repeat))
