"""The fast path: ants-nats against a bare JetStream work queue, arq, taskiq and FastStream, in one run.

Every measurement runs on its own fresh server (embedded nats-server; redis-server for arq); the
contender and its baselines alternate, and with ``--repeat R`` the figures are medians of R.

1. throughput: N no-op tasks, A agents of capacity 1 in one process sharing one connection, and (for
   A > 1) one agent of capacity A, the shape of the baselines' single worker; submission
   (``submit_many`` in chunks of 200) overlapping the work; tasks/s, server messages and KiB per task
   (``/varz`` in + out), claims per task (attempts on the board). A task counts as done, as the
   baselines count theirs, in the workers' process: when the agent that ran it has its completion
   stored (the record's compare-and-set and its ``task.completed`` event, both acknowledged by the
   server). Also measured, as further rows: the same runs seen done by the submitter, through
   ``board.wait()`` (a watch of every record revision) and, for A agents, ``board.endings()``
   (each task's ending event); and the process's CPU time per task of every ants-nats run.
   Baselines: a work-queue stream (256 ``js.publish`` acks in flight, one pull consumer fetching
   256 and acking each), arq
   (``max_jobs`` = A, ``poll_delay`` 1 ms), taskiq + taskiq-nats (``PullBasedJetStreamBroker`` defaults,
   ``max_async_tasks`` = A) and FastStream (``NatsBroker``, JetStream ``PullSub(batch_size=64,
   timeout=1.0)``, ``max_workers`` = A); the last three run their worker in this process and loop.
2. submission with no agent: ``submit_many`` rate (chunks of 500) and single ``submit()`` latency,
   against ``js.publish`` (256 in flight, and one at a time).
3. idle latency: with 4 idle agents, submit -> completion (seen by a ``board.watch()``), against
   publish -> receipt by an idle pull consumer, and submit -> the worker's end of the task for taskiq
   (its ``post_save`` hook) and FastStream (the handler's return).

    .venv/bin/pip install -e '.[bench]'   # arq, taskiq(-nats), faststream, matplotlib, uvloop
    apt-get install -y redis-server         # for arq
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
import _drive
import _faststream
import _jetstream
import _taskiq
from _results import Latency, Rate, Traffic, median, median_latency, median_rate, ratio

import ants_nats
from ants_nats import EmbeddedServer, TaskBoard, __version__, configure_logging
from ants_nats.server import monitor_json

RESULTS = Path(__file__).resolve().parent / "results"
ANTS_NATS_FROM = str(Path(ants_nats.__file__).resolve().parent)
"""The package measured: this checkout's, or another tree's put first with PYTHONPATH."""
IDLE_AGENTS = 4
BASELINES = ("bare", "arq", "taskiq", "faststream")
"""Every system ants-nats is compared with, as named in the JSON."""
LABELS = {
    "ants": "ants-nats",
    "ants_one": "  1 agent",
    "ants_wait": "  by wait()",
    "ants_endings": "  endings()",
    "ants_one_wait": "  1, wait()",
    "bare": "bare queue",
    "arq": "arq",
    "taskiq": "taskiq",
    "faststream": "faststream",
}


@dataclass
class Options:
    tasks: int
    agents: list[int]
    repeat: int
    samples: int
    arq: bool
    taskiq: bool
    faststream: bool
    quick: bool


@dataclass
class Runs:
    """Everything measured, per repeat."""

    ants: dict[int, list[Rate]] = field(default_factory=dict)
    ants_one: dict[int, list[Rate]] = field(default_factory=dict)
    """One agent of capacity A (A > 1)."""
    ants_wait: dict[int, list[Rate]] = field(default_factory=dict)
    """As ``ants``, each task seen done by the submitter's ``board.wait()`` instead."""
    ants_one_wait: dict[int, list[Rate]] = field(default_factory=dict)
    """As ``ants_one``, seen done by ``board.wait()``."""
    ants_endings: dict[int, list[Rate]] = field(default_factory=dict)
    """As ``ants``, seen done by the submitter's ``board.endings()`` (each task's ending event)."""
    bare: dict[int, list[Rate]] = field(default_factory=dict)
    arq: dict[int, list[Rate]] = field(default_factory=dict)
    taskiq: dict[int, list[Rate]] = field(default_factory=dict)
    faststream: dict[int, list[Rate]] = field(default_factory=dict)
    submit_rate: list[Rate] = field(default_factory=list)
    publish_rate: list[Rate] = field(default_factory=list)
    submit_latency: list[Latency] = field(default_factory=list)
    publish_latency: list[Latency] = field(default_factory=list)
    idle: list[Latency] = field(default_factory=list)
    idle_submit: list[Latency] = field(default_factory=list)
    idle_msgs: list[float] = field(default_factory=list)
    bare_idle: list[Latency] = field(default_factory=list)
    bare_idle_msgs: list[float] = field(default_factory=list)
    taskiq_idle: list[Latency] = field(default_factory=list)
    taskiq_idle_msgs: list[float] = field(default_factory=list)
    faststream_idle: list[Latency] = field(default_factory=list)
    faststream_idle_msgs: list[float] = field(default_factory=list)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


Step = tuple[str, Callable[[], Awaitable[None]]]


async def alternate(repeat: int, steps: list[Step]) -> None:
    """Run the steps, rotating their order with the repeat so that none always goes first."""
    shift = repeat % len(steps)
    for name, step in steps[shift:] + steps[:shift]:
        started = time.perf_counter()
        await step()
        progress(f"  [{repeat + 1}] {name} ({time.perf_counter() - started:.1f} s)")


def _rate_step(label: str, into: list[Rate], run: Callable[[], Awaitable[Rate]]) -> Step:
    async def step() -> None:
        into.append(await run())

    return label, step


def _idle_step(
    label: str,
    latencies: list[Latency],
    msgs: list[float],
    samples: int,
    run: Callable[[int], Awaitable[tuple[Latency, Traffic]]],
) -> Step:
    async def step() -> None:
        latency, traffic = await run(samples)
        latencies.append(latency)
        msgs.append(traffic.msgs / samples)

    return label, step


def throughput_steps(opts: Options, runs: Runs, agents: int) -> list[Step]:
    """ants-nats and each baseline that is on, at ``agents`` (concurrency for the baselines)."""
    n = opts.tasks
    steps = [
        _rate_step(
            f"ants-nats, {agents} agents",
            runs.ants.setdefault(agents, []),
            partial(_ants.throughput, agents, n, count="done"),
        ),
        _rate_step(
            f"ants-nats, {agents} agents, board.wait()",
            runs.ants_wait.setdefault(agents, []),
            partial(_ants.throughput, agents, n, count="wait"),
        ),
        _rate_step(
            f"bare queue (slot {agents})", runs.bare.setdefault(agents, []), partial(_jetstream.throughput, n)
        ),
    ]
    if hasattr(TaskBoard, "endings"):  # (not in a tree from before it, measured with PYTHONPATH)
        steps.append(
            _rate_step(
                f"ants-nats, {agents} agents, board.endings()",
                runs.ants_endings.setdefault(agents, []),
                partial(_ants.throughput, agents, n, count="endings"),
            )
        )
    if agents > 1:
        steps.append(
            _rate_step(
                f"ants-nats, 1 agent of capacity {agents}",
                runs.ants_one.setdefault(agents, []),
                partial(_ants.throughput, 1, n, capacity=agents, count="done"),
            )
        )
        steps.append(
            _rate_step(
                f"ants-nats, 1 agent of capacity {agents}, board.wait()",
                runs.ants_one_wait.setdefault(agents, []),
                partial(_ants.throughput, 1, n, capacity=agents, count="wait"),
            )
        )
    if opts.arq:
        steps.append(
            _rate_step(
                f"arq, max_jobs {agents}",
                runs.arq.setdefault(agents, []),
                partial(_arq.throughput, agents, n),
            )
        )
    if opts.taskiq:
        steps.append(
            _rate_step(
                f"taskiq, max_async_tasks {agents}",
                runs.taskiq.setdefault(agents, []),
                partial(_taskiq.throughput, agents, n),
            )
        )
    if opts.faststream:
        steps.append(
            _rate_step(
                f"faststream, max_workers {agents}",
                runs.faststream.setdefault(agents, []),
                partial(_faststream.throughput, agents, n),
            )
        )
    return steps


def idle_steps(opts: Options, runs: Runs) -> list[Step]:
    """Idle latency of ants-nats, the bare queue and taskiq and FastStream when they are on."""

    async def ants() -> None:
        total, submitting, traffic = await _ants.idle_latency(opts.samples, IDLE_AGENTS)
        runs.idle.append(total)
        runs.idle_submit.append(submitting)
        runs.idle_msgs.append(traffic.msgs / opts.samples)

    steps = [
        ("idle latency", ants),
        _idle_step(
            "bare idle latency", runs.bare_idle, runs.bare_idle_msgs, opts.samples, _jetstream.idle_latency
        ),
    ]
    if opts.taskiq:
        steps.append(
            _idle_step(
                "taskiq idle latency",
                runs.taskiq_idle,
                runs.taskiq_idle_msgs,
                opts.samples,
                _taskiq.idle_latency,
            )
        )
    if opts.faststream:
        steps.append(
            _idle_step(
                "faststream idle latency",
                runs.faststream_idle,
                runs.faststream_idle_msgs,
                opts.samples,
                _faststream.idle_latency,
            )
        )
    return steps


async def measure(opts: Options) -> Runs:
    runs = Runs()
    n = opts.tasks
    for r in range(opts.repeat):
        for agents in opts.agents:
            await alternate(r, throughput_steps(opts, runs, agents))
        await alternate(
            r,
            [
                _rate_step("submit_many rate", runs.submit_rate, partial(_ants.submit_rate, n)),
                _rate_step("js.publish rate", runs.publish_rate, partial(_jetstream.publish_rate, n)),
            ],
        )

        async def submit_latency() -> None:
            runs.submit_latency.append(await _ants.submit_latency(opts.samples))

        async def publish_latency() -> None:
            runs.publish_latency.append(await _jetstream.publish_latency(opts.samples))

        await alternate(r, [("submit latency", submit_latency), ("js.publish latency", publish_latency)])
        await alternate(r, idle_steps(opts, runs))
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
        "ants_nats_from": ANTS_NATS_FROM,
        "arq": _arq.version() if opts.arq else None,
        "taskiq": _taskiq.version() if opts.taskiq else None,
        "faststream": _faststream.version() if opts.faststream else None,
    }


def summarise(opts: Options, runs: Runs, env: dict[str, Any], calib: dict[str, float]) -> dict[str, Any]:
    rows = []
    all_bare = [r for agents in opts.agents for r in runs.bare[agents]]
    for agents in opts.agents:
        measured: dict[str, list[Rate]] = {
            "ants": runs.ants[agents],
            "ants_one": runs.ants_one.get(agents, []),
            "ants_wait": runs.ants_wait[agents],
            "ants_one_wait": runs.ants_one_wait.get(agents, []),
            "ants_endings": runs.ants_endings.get(agents, []),
            "bare": runs.bare[agents],
            "arq": runs.arq.get(agents, []),
            "taskiq": runs.taskiq.get(agents, []),
            "faststream": runs.faststream.get(agents, []),
        }
        medians = {name: median_rate(found) if found else None for name, found in measured.items()}
        ants = medians["ants"]
        assert ants is not None
        row: dict[str, Any] = {"agents": agents, **medians}
        for name in BASELINES:
            other = medians[name]
            for contender in ("ants", "ants_one", "ants_wait", "ants_one_wait", "ants_endings"):
                mine = medians[contender]
                row[f"{contender}_over_{name}"] = (
                    ratio(mine["tasks_per_s"], other["tasks_per_s"]) if other and mine else None
                )
        for name in BASELINES:
            other = medians[name]
            row[f"msgs_ants_over_{name}"] = (
                ratio(ants["msgs_per_task"], other["msgs_per_task"]) if other else None
            )
        row["runs"] = {name: [r.as_json() for r in found] for name, found in measured.items()}
        rows.append(row)
    submit, publish = median_rate(runs.submit_rate), median_rate(runs.publish_rate)
    one, one_bare = median_latency(runs.submit_latency), median_latency(runs.publish_latency)
    idle, idle_bare = median_latency(runs.idle), median_latency(runs.bare_idle)
    idle_taskiq = median_latency(runs.taskiq_idle) if runs.taskiq_idle else None
    idle_faststream = median_latency(runs.faststream_idle) if runs.faststream_idle else None
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
            "taskiq_kick_chunk": _drive.SUBMIT_CHUNK,
            "faststream_pull_sub": {
                "batch_size": _faststream.BATCH_SIZE,
                "timeout": _faststream.FETCH_TIMEOUT_S,
            },
            "faststream_publish_chunk": _drive.SUBMIT_CHUNK,
            "idle_workers_taskiq_faststream": _drive.IDLE_WORKERS,
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
            "taskiq": idle_taskiq,
            "taskiq_msgs_per_task": median(list(runs.taskiq_idle_msgs)),
            "faststream": idle_faststream,
            "faststream_msgs_per_task": median(list(runs.faststream_idle_msgs)),
            "ants_over_bare_p50": ratio(idle["p50_ms"], idle_bare["p50_ms"]),
            "ants_over_taskiq_p50": ratio(idle["p50_ms"], idle_taskiq["p50_ms"]) if idle_taskiq else None,
            "ants_over_faststream_p50": (
                ratio(idle["p50_ms"], idle_faststream["p50_ms"]) if idle_faststream else None
            ),
            "runs": {
                "ants": [r.as_json() for r in runs.idle],
                "bare": [r.as_json() for r in runs.bare_idle],
                "taskiq": [r.as_json() for r in runs.taskiq_idle],
                "faststream": [r.as_json() for r in runs.faststream_idle],
            },
        },
        "calibration_msgs": calib,
    }


def _f(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def print_table(summary: dict[str, Any]) -> None:
    cfg, env = summary["config"], summary["environment"]
    skipped = "skipped"
    print(
        f"\nfastpath: {cfg['tasks']} no-op tasks, median of {cfg['repeat']}; {env['loop']} loop, "
        f"python {env['python']}, nats-server {env['nats_server']}, arq {env['arq'] or skipped}, "
        f"taskiq {env['taskiq'] or skipped}, faststream {env['faststream'] or skipped}, {env['cpus']} CPUs"
    )
    print(
        "\nthroughput, submission overlapping the work (bare queue: publish 256 in flight, fetch 256; "
        "arq, taskiq, faststream: concurrency = agents; '1 agent': ants-nats, one agent of capacity = agents;"
        "\nants-nats counts a task done when its agent's completion is stored, as the baselines count in"
        " their worker; 'by wait()', '1, wait()': the same, seen done by the submitter's board.wait();"
        "\n'endings()': by the submitter's board.endings(); CPU us/task: the benchmark process's CPU time)"
    )
    print(
        f"{'agents':>6}  {'system':<11} {'tasks/s':>8} {'ants/this':>9} {'1 agent/this':>12} "
        f"{'wait/this':>9} {'msgs/task':>9} {'KiB/task':>8} {'claims/task':>11} {'CPU us/task':>11}"
    )
    for row in summary["throughput"]:
        for name in ("ants", "ants_one", "ants_wait", "ants_one_wait", "ants_endings", *BASELINES):
            figures = row[name]
            if figures is None:
                continue
            baseline = name in BASELINES
            vs = row[f"ants_over_{name}"] if baseline else None
            vs_one = row[f"ants_one_over_{name}"] if baseline else None
            vs_wait = row[f"ants_wait_over_{name}"] if baseline else None
            print(
                f"{row['agents'] if name == 'ants' else '':>6}  {LABELS[name]:<11} "
                f"{_f(figures['tasks_per_s'], '.0f', 8)} {_f(vs, '.3f', 9)} {_f(vs_one, '.3f', 12)} "
                f"{_f(vs_wait, '.3f', 9)} "
                f"{_f(figures['msgs_per_task'], '.1f', 9)} {_f(figures['kib_per_task'], '.2f', 8)} "
                f"{_f(figures['claims_per_task'], '.2f', 11)} {_f(figures.get('cpu_us_per_task'), '.0f', 11)}"
            )
    sub, idle = summary["submit"], summary["idle_latency"]
    print(f"\n{'no agents':<34} {'ants-nats':>16} {'bare queue':>16} {'ratio a/b':>12}")
    print(
        f"{'submit_many (500/call) vs publish':<34} {_f(sub['submit_many']['tasks_per_s'], '.0f', 12)} t/s "
        f"{_f(sub['js_publish']['tasks_per_s'], '.0f', 12)} m/s {_f(sub['ratio'], '.3f', 12)}"
    )
    a, b = sub["submit_one"], sub["js_publish_one"]
    print(
        f"{'one submit vs js.publish, ms':<34} {_f(a['p50_ms'], '.2f', 7)} / {_f(a['p99_ms'], '.2f', 6)} "
        f"{_f(b['p50_ms'], '.2f', 7)} / {_f(b['p99_ms'], '.2f', 6)} "
        f"{_f(ratio(a['p50_ms'], b['p50_ms']), '.1f', 5)} / {_f(ratio(a['p99_ms'], b['p99_ms']), '.1f', 4)}"
    )
    print(
        f"\n{'idle, one task at a time, ms':<44} {'p50':>7} {'p99':>7} {'ants/this p50':>13} {'msgs/task':>9}"
    )
    lines = [
        (
            f"ants-nats, {IDLE_AGENTS} agents: submit -> done (watch)",
            idle["ants"],
            idle["ants_msgs_per_task"],
        ),
        ("  of which submit()", idle["ants_submit_part"], None),
        ("bare queue: publish -> receipt (fetch 1)", idle["bare"], idle["bare_msgs_per_task"]),
        ("taskiq: kiq -> post_save", idle["taskiq"], idle["taskiq_msgs_per_task"]),
        ("faststream: publish -> handler returned", idle["faststream"], idle["faststream_msgs_per_task"]),
    ]
    for i, (label, latency, msgs) in enumerate(lines):
        if latency is None:
            continue
        vs = ratio(idle["ants"]["p50_ms"], latency["p50_ms"]) if i >= 2 else None
        print(
            f"{label:<44} {_f(latency['p50_ms'], '.2f', 7)} {_f(latency['p99_ms'], '.2f', 7)} "
            f"{_f(vs, '.2f', 13)} {_f(msgs, '.1f', 9)}"
        )
    calib = summary["calibration_msgs"]
    print(
        "\n/varz messages per operation: "
        + ", ".join(f"{k} {v:g}" for k, v in calib.items())
        + "\n(the board.wait() rows' msgs/task include its watch: one delivery per task-record revision)"
    )


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (optional dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = summary["throughput"]
    xs = [row["agents"] for row in rows]
    fig, (rate, msgs) = plt.subplots(1, 2, figsize=(11, 4.2))
    rate.plot(xs, [row["ants"]["tasks_per_s"] for row in rows], "o-", label="ants-nats")
    rate.plot(
        xs, [row["ants_wait"]["tasks_per_s"] for row in rows], "o--", label="ants-nats, seen by board.wait()"
    )
    one = [(row["agents"], row["ants_one"]["tasks_per_s"]) for row in rows if row["ants_one"]]
    if one:
        rate.plot(*zip(*one, strict=True), "o:", label="ants-nats, one agent of capacity = agents")
    for name, marker, label in (
        ("arq", "s-", "arq (max_jobs = agents)"),
        ("taskiq", "D-", "taskiq-nats (max_async_tasks = agents)"),
        ("faststream", "v-", "FastStream (max_workers = agents)"),
    ):
        if all(row[name] for row in rows):
            rate.plot(xs, [row[name]["tasks_per_s"] for row in rows], marker, label=label)
    bare = [row["bare"]["tasks_per_s"] for row in rows]
    rate.plot(xs, bare, "^", color="grey", label="bare JetStream queue")
    rate.axhline(summary["bare_all_slots"]["tasks_per_s"], color="grey", linestyle="--", linewidth=0.8)
    rate.set(xscale="log", yscale="log", xlabel="agents (capacity 1 each)", ylabel="tasks/s")
    rate.set_title(f"throughput, {summary['config']['tasks']} no-op tasks")
    msgs.plot(xs, [row["ants"]["msgs_per_task"] for row in rows], "o-", label="ants-nats")
    msgs.plot(xs, [row["ants_wait"]["msgs_per_task"] for row in rows], "o--", label="ants-nats, board.wait()")
    msgs.plot(xs, [row["bare"]["msgs_per_task"] for row in rows], "^--", color="grey", label="bare queue")
    for name, marker, label in (("taskiq", "D-", "taskiq-nats"), ("faststream", "v-", "FastStream")):
        if all(row[name] for row in rows):
            msgs.plot(xs, [row[name]["msgs_per_task"] for row in rows], marker, label=label)
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
    parser.add_argument("--no-taskiq", action="store_true", help="skip the taskiq baseline")
    parser.add_argument("--no-faststream", action="store_true", help="skip the FastStream baseline")
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
    use_taskiq = not args.no_taskiq
    if use_taskiq and (why := _taskiq.missing()) is not None:
        print(f"taskiq baseline skipped: {why}")
        use_taskiq = False
    use_faststream = not args.no_faststream
    if use_faststream and (why := _faststream.missing()) is not None:
        print(f"faststream baseline skipped: {why}")
        use_faststream = False
    opts = Options(
        tasks=args.tasks or (300 if quick else 2000),
        agents=args.agents or ([1, 16] if quick else [1, 16, 64]),
        repeat=max(1, args.repeat),
        samples=args.samples or (100 if quick else 300),
        arq=use_arq,
        taskiq=use_taskiq,
        faststream=use_faststream,
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
