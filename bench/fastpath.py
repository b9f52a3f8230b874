"""The fast path: ants-nats against a bare JetStream work queue and arq, measured in the same run.

Every measurement runs on its own fresh server (embedded nats-server; redis-server for arq); the
contender and its baselines alternate, and with ``--repeat R`` the figures are medians of R.

1. throughput: N no-op tasks, A agents of capacity 1 in one process sharing one connection, submission
   (``submit_many`` in chunks of 200) overlapping the work; tasks/s, server messages and KiB per task
   (``/varz`` in + out), claims per task (attempts on the board). Baselines: a work-queue stream
   (256 ``js.publish`` acks in flight, one pull consumer fetching 256 and acking each) and arq
   (``max_jobs`` = A, ``poll_delay`` 1 ms).
2. submission with no agent: ``submit_many`` rate (chunks of 500) and single ``submit()`` latency,
   against ``js.publish`` (256 in flight, and one at a time).
3. idle latency: with 4 idle agents, submit -> completion (seen by a ``board.watch()``), against
   publish -> receipt by an idle pull consumer.

    .venv/bin/pip install -e '.[bench]'   # arq, matplotlib, uvloop; and: apt-get install -y redis-server
    .venv/bin/python bench/fastpath.py      # full run; --quick for a smoke run; --help for the options

Results: a table on stdout, JSON in bench/results/fastpath.json, a plot in bench/results/fastpath.png.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import _ants
import _arq
import _jetstream
from _results import Latency, Rate, median, median_latency, median_rate, ratio

from ants_nats import EmbeddedServer, __version__, configure_logging
from ants_nats.server import monitor_json

RESULTS = Path(__file__).resolve().parent / "results"
IDLE_AGENTS = 4


@dataclass
class Options:
    tasks: int
    agents: list[int]
    repeat: int
    samples: int
    arq: bool
    quick: bool


@dataclass
class Runs:
    """Everything measured, per repeat."""

    ants: dict[int, list[Rate]] = field(default_factory=dict)
    bare: dict[int, list[Rate]] = field(default_factory=dict)
    arq: dict[int, list[Rate]] = field(default_factory=dict)
    submit_rate: list[Rate] = field(default_factory=list)
    publish_rate: list[Rate] = field(default_factory=list)
    submit_latency: list[Latency] = field(default_factory=list)
    publish_latency: list[Latency] = field(default_factory=list)
    idle: list[Latency] = field(default_factory=list)
    idle_submit: list[Latency] = field(default_factory=list)
    idle_msgs: list[float] = field(default_factory=list)
    bare_idle: list[Latency] = field(default_factory=list)
    bare_idle_msgs: list[float] = field(default_factory=list)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def alternate(repeat: int, steps: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
    """Run the steps, rotating their order with the repeat so that none always goes first."""
    shift = repeat % len(steps)
    for name, step in steps[shift:] + steps[:shift]:
        started = time.perf_counter()
        await step()
        progress(f"  [{repeat + 1}] {name} ({time.perf_counter() - started:.1f} s)")


async def measure(opts: Options) -> Runs:
    runs = Runs()
    n = opts.tasks

    async def ants(agents: int) -> None:
        runs.ants.setdefault(agents, []).append(await _ants.throughput(agents, n))

    async def bare(agents: int) -> None:
        runs.bare.setdefault(agents, []).append(await _jetstream.throughput(n))

    async def arq(agents: int) -> None:
        runs.arq.setdefault(agents, []).append(await _arq.throughput(agents, n))

    for r in range(opts.repeat):
        for agents in opts.agents:
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                (f"ants-nats, {agents} agents", partial(ants, agents)),
                (f"bare queue (slot {agents})", partial(bare, agents)),
            ]
            if opts.arq:
                steps.append((f"arq, max_jobs {agents}", partial(arq, agents)))
            await alternate(r, steps)

        async def submit_rate() -> None:
            runs.submit_rate.append(await _ants.submit_rate(n))

        async def publish_rate() -> None:
            runs.publish_rate.append(await _jetstream.publish_rate(n))

        async def submit_latency() -> None:
            runs.submit_latency.append(await _ants.submit_latency(opts.samples))

        async def publish_latency() -> None:
            runs.publish_latency.append(await _jetstream.publish_latency(opts.samples))

        async def idle() -> None:
            total, submitting, traffic = await _ants.idle_latency(opts.samples, IDLE_AGENTS)
            runs.idle.append(total)
            runs.idle_submit.append(submitting)
            runs.idle_msgs.append(traffic.msgs / opts.samples)

        async def bare_idle() -> None:
            latency, traffic = await _jetstream.idle_latency(opts.samples)
            runs.bare_idle.append(latency)
            runs.bare_idle_msgs.append(traffic.msgs / opts.samples)

        await alternate(r, [("submit_many rate", submit_rate), ("js.publish rate", publish_rate)])
        await alternate(r, [("submit latency", submit_latency), ("js.publish latency", publish_latency)])
        await alternate(r, [("idle latency", idle), ("bare idle latency", bare_idle)])
    return runs


async def environment(opts: Options) -> dict[str, Any]:
    async with EmbeddedServer() as server:
        varz = await monitor_json(server.monitor_port, "/varz")
    return {
        "python": platform.python_version(),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "nats_server": varz.get("version"),
        "ants_nats": __version__,
        "arq": _arq.version() if opts.arq else None,
    }


def summarise(opts: Options, runs: Runs, env: dict[str, Any], calib: dict[str, float]) -> dict[str, Any]:
    rows = []
    all_bare = [r for agents in opts.agents for r in runs.bare[agents]]
    for agents in opts.agents:
        ants, bare = median_rate(runs.ants[agents]), median_rate(runs.bare[agents])
        arq = median_rate(runs.arq[agents]) if opts.arq else None
        rows.append(
            {
                "agents": agents,
                "ants": ants,
                "bare": bare,
                "arq": arq,
                "ants_over_bare": ratio(ants["tasks_per_s"], bare["tasks_per_s"]),
                "ants_over_arq": ratio(ants["tasks_per_s"], arq["tasks_per_s"]) if arq else None,
                "msgs_ants_over_bare": ratio(ants["msgs_per_task"], bare["msgs_per_task"]),
                "runs": {
                    "ants": [r.as_json() for r in runs.ants[agents]],
                    "bare": [r.as_json() for r in runs.bare[agents]],
                    "arq": [r.as_json() for r in runs.arq.get(agents, [])],
                },
            }
        )
    submit, publish = median_rate(runs.submit_rate), median_rate(runs.publish_rate)
    one, one_bare = median_latency(runs.submit_latency), median_latency(runs.publish_latency)
    idle, idle_bare = median_latency(runs.idle), median_latency(runs.bare_idle)
    return {
        "config": {
            "tasks": opts.tasks,
            "agents": opts.agents,
            "repeat": opts.repeat,
            "samples": opts.samples,
            "quick": opts.quick,
            "idle_agents": IDLE_AGENTS,
            "submit_chunk": _ants.SUBMIT_CHUNK,
            "rate_chunk": _ants.RATE_CHUNK,
            "bare_in_flight": _jetstream.IN_FLIGHT,
            "bare_fetch_batch": _jetstream.BATCH,
            "arq_poll_delay_s": _arq.POLL_DELAY_S,
        },
        "environment": env,
        "throughput": rows,
        "bare_all_slots": median_rate(all_bare),
        "submit": {
            "submit_many": submit,
            "js_publish": publish,
            "ratio": ratio(submit["tasks_per_s"], publish["tasks_per_s"]),
            "submit_one": one,
            "js_publish_one": one_bare,
            "runs": {
                "submit_many": [r.as_json() for r in runs.submit_rate],
                "js_publish": [r.as_json() for r in runs.publish_rate],
                "submit_one": [r.as_json() for r in runs.submit_latency],
                "js_publish_one": [r.as_json() for r in runs.publish_latency],
            },
        },
        "idle_latency": {
            "ants": idle,
            "ants_submit_part": median_latency(runs.idle_submit),
            "ants_msgs_per_task": median(list(runs.idle_msgs)),
            "bare": idle_bare,
            "bare_msgs_per_task": median(list(runs.bare_idle_msgs)),
            "runs": {"ants": [r.as_json() for r in runs.idle], "bare": [r.as_json() for r in runs.bare_idle]},
        },
        "calibration_msgs": calib,
    }


def _f(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def print_table(summary: dict[str, Any]) -> None:
    cfg, env = summary["config"], summary["environment"]
    print(
        f"\nfastpath: {cfg['tasks']} no-op tasks, median of {cfg['repeat']}; {env['loop']} loop, "
        f"python {env['python']}, nats-server {env['nats_server']}, arq {env['arq'] or 'skipped'}, "
        f"{env['cpus']} CPUs"
    )
    print("\nthroughput, submission overlapping the work (bare queue: publish 256 in flight, fetch 256)")
    print(
        f"{'agents':>6} {'ants t/s':>9} {'bare t/s':>9} {'arq t/s':>8} {'ants/bare':>9} {'ants/arq':>8} "
        f"{'msgs/task a|b':>14} {'KiB/task a|b':>13} {'claims/task':>11}"
    )
    for row in summary["throughput"]:
        a, b, q = row["ants"], row["bare"], row["arq"] or {}
        print(
            f"{row['agents']:>6} {_f(a['tasks_per_s'], '.0f', 9)} {_f(b['tasks_per_s'], '.0f', 9)} "
            f"{_f(q.get('tasks_per_s'), '.0f', 8)} {_f(row['ants_over_bare'], '.3f', 9)} "
            f"{_f(row['ants_over_arq'], '.2f', 8)} "
            f"{_f(a['msgs_per_task'], '.1f', 7)}|{_f(b['msgs_per_task'], '.1f', 6)} "
            f"{_f(a['kib_per_task'], '.2f', 6)}|{_f(b['kib_per_task'], '.2f', 6)} "
            f"{_f(a['claims_per_task'], '.2f', 11)}"
        )
    sub, idle = summary["submit"], summary["idle_latency"]
    print(f"\n{'no agents / idle':<34} {'ants-nats':>16} {'bare queue':>16} {'ratio a/b':>12}")
    print(
        f"{'submit_many (500/call) vs publish':<34} {_f(sub['submit_many']['tasks_per_s'], '.0f', 12)} t/s "
        f"{_f(sub['js_publish']['tasks_per_s'], '.0f', 12)} m/s {_f(sub['ratio'], '.3f', 12)}"
    )
    for label, a, b in (
        ("one submit vs js.publish, ms", sub["submit_one"], sub["js_publish_one"]),
        (f"idle {IDLE_AGENTS} agents: to done, ms", idle["ants"], idle["bare"]),
    ):
        print(
            f"{label:<34} {_f(a['p50_ms'], '.2f', 7)} / {_f(a['p99_ms'], '.2f', 6)} "
            f"{_f(b['p50_ms'], '.2f', 7)} / {_f(b['p99_ms'], '.2f', 6)} "
            f"{_f(ratio(a['p50_ms'], b['p50_ms']), '.1f', 5)} / "
            f"{_f(ratio(a['p99_ms'], b['p99_ms']), '.1f', 4)}"
        )
    print(
        f"{'  (p50 / p99; idle: submit() part)':<34} {_f(idle['ants_submit_part']['p50_ms'], '.2f', 7)} / "
        f"{_f(idle['ants_submit_part']['p99_ms'], '.2f', 6)}   msgs/task idle: "
        f"{_f(idle['ants_msgs_per_task'], '.1f', 0)} vs {_f(idle['bare_msgs_per_task'], '.1f', 0)}"
    )
    calib = summary["calibration_msgs"]
    print(
        "\n/varz messages per operation: "
        + ", ".join(f"{k} {v:g}" for k, v in calib.items())
        + "\n(ants msgs/task includes board.wait()'s watch: one delivery per task-record revision)"
    )


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (optional dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = summary["throughput"]
    xs = [row["agents"] for row in rows]
    fig, (rate, msgs) = plt.subplots(1, 2, figsize=(11, 4.2))
    rate.plot(xs, [row["ants"]["tasks_per_s"] for row in rows], "o-", label="ants-nats")
    if all(row["arq"] for row in rows):
        rate.plot(xs, [row["arq"]["tasks_per_s"] for row in rows], "s-", label="arq (max_jobs = agents)")
    bare = [row["bare"]["tasks_per_s"] for row in rows]
    rate.plot(xs, bare, "^", color="grey", label="bare JetStream queue")
    rate.axhline(summary["bare_all_slots"]["tasks_per_s"], color="grey", linestyle="--", linewidth=0.8)
    rate.set(xscale="log", yscale="log", xlabel="agents (capacity 1 each)", ylabel="tasks/s")
    rate.set_title(f"throughput, {summary['config']['tasks']} no-op tasks")
    msgs.plot(xs, [row["ants"]["msgs_per_task"] for row in rows], "o-", label="ants-nats")
    msgs.plot(xs, [row["bare"]["msgs_per_task"] for row in rows], "^--", color="grey", label="bare queue")
    msgs.set(xscale="log", xlabel="agents (capacity 1 each)", ylabel="server messages per task (/varz)")
    msgs.set_ylim(bottom=0)
    msgs.set_title("messages per task")
    for ax in (rate, msgs):
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    env = summary["environment"]
    fig.suptitle(
        f"ants-nats {env['ants_nats']} fast path, median of {summary['config']['repeat']} "
        f"({env['loop']}, {env['cpus']} CPUs)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main(opts: Options) -> dict[str, Any]:
    env = await environment(opts)
    progress(f"fastpath: {opts.tasks} tasks, agents {opts.agents}, repeat {opts.repeat}, loop {env['loop']}")
    calib = await _jetstream.calibration()
    calib["all_tasks_per_record"] = await _ants.watch_cost(200)
    runs = await measure(opts)
    return summarise(opts, runs, env, calib)


def run(coro: Coroutine[Any, Any, dict[str, Any]], use_uvloop: bool) -> dict[str, Any]:
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 (optional dependency)
        except ImportError:
            progress("uvloop not installed (.venv/bin/pip install -e '.[bench]'): using asyncio's loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)
    return asyncio.run(coro)


def parse(argv: list[str] | None = None) -> tuple[Options, Path, Path | None, bool]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", "-n", type=int, help="tasks per throughput run (default 2000; quick 300)")
    parser.add_argument(
        "--agents", "-a", type=int, nargs="+", help="agents per run (default 1 16 64; quick 1 16)"
    )
    parser.add_argument("--repeat", "-r", type=int, default=1, help="repeats, reporting medians (default 1)")
    parser.add_argument("--samples", type=int, help="sequential latency samples (default 300; quick 100)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=300, agents 1 16")
    parser.add_argument("--no-arq", action="store_true", help="skip the arq baseline")
    parser.add_argument("--uvloop", action="store_true", help="run under uvloop (if installed)")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/fastpath[-quick].json)")
    parser.add_argument("--plot", type=Path, help="PNG plot (default bench/results/fastpath[-quick].png)")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    use_arq = not args.no_arq
    if use_arq and (why := _arq.missing()) is not None:
        print(f"arq baseline skipped: {why}")
        use_arq = False
    opts = Options(
        tasks=args.tasks or (300 if quick else 2000),
        agents=args.agents or ([1, 16] if quick else [1, 16, 64]),
        repeat=max(1, args.repeat),
        samples=args.samples or (100 if quick else 300),
        arq=use_arq,
        quick=quick,
    )
    stem = "fastpath-quick" if quick else "fastpath"
    plot_path = None if args.no_plot else (args.plot or RESULTS / f"{stem}.png")
    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        print("plot skipped: matplotlib not installed (.venv/bin/pip install -e '.[bench]')")
        plot_path = None
    return opts, args.out or RESULTS / f"{stem}.json", plot_path, args.uvloop


if __name__ == "__main__":
    options, out_path, plot_to, uv = parse()
    configure_logging(level="WARNING")
    results = run(main(options), uv)
    print_table(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out_path}")
    if plot_to is not None:
        plot(results, plot_to)
        print(f"wrote {plot_to}")
