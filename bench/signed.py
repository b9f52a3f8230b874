"""What a signed board costs: ants-nats no-op throughput on a signed board against an unsigned
one, measured in the same run (alternating, medians of ``--repeat``), with messages and bytes
through the server per task.

    .venv/bin/python bench/signed.py --agents 16 --tasks 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from _ants import throughput
from _results import Rate


async def main(agents: int, tasks: int, repeat: int) -> None:
    runs: dict[bool, list[Rate]] = {False: [], True: []}
    for round_ in range(repeat):
        for signed in (False, True) if round_ % 2 == 0 else (True, False):
            runs[signed].append(await throughput(agents, tasks, signed=signed))
            print(
                f"  round {round_ + 1}/{repeat} signed={signed}: {runs[signed][-1].per_s:,.0f} tasks/s",
                flush=True,
            )

    def median(signed: bool, field: str) -> float:
        return statistics.median(getattr(rate, field) or 0.0 for rate in runs[signed])

    print(f"\n{agents} agents, {tasks} no-op tasks, medians of {repeat}")
    print(f"{'board':<10} {'tasks/s':>9} {'msgs/task':>10} {'KiB/task':>9}")
    for signed in (False, True):
        name = "signed" if signed else "unsigned"
        per_s, msgs, kib = (median(signed, f) for f in ("per_s", "msgs_per_task", "kib_per_task"))
        print(f"{name:<10} {per_s:>9,.0f} {msgs:>10.1f} {kib:>9.2f}")
    print(f"\nsigned / unsigned tasks/s: {median(True, 'per_s') / median(False, 'per_s'):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    asyncio.run(main(opts.agents, opts.tasks, opts.repeat))
