"""The ``ants-nats`` command: the demo runs to completion; bad input is a message and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from pydantic import JsonValue

from ants_nats import Agent, InvalidTask, Task, TaskBoard, TaskContext, TaskNotFound, TaskStatus
from ants_nats._pull import last_of_each, replay
from ants_nats.cli.task_input import not_before, task_from_flags
from ants_nats.errors import ServerUnavailable, UsageError
from ants_nats.models import AgentLedger, Counts, utcnow
from ants_nats.names import ARTIFACTS_BUCKET, TRAIL_STREAM
from ants_nats.server import EmbeddedServer, find_server_binary, free_port
from ants_nats.views import reputation_table


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ants_nats.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_its_own_embedded_server_finishes_every_task() -> None:
    result = run_cli("demo", "--documents", "3")
    assert result.returncode == 0, result.stderr
    assert "10 tasks in" in result.stdout
    assert "10 done" in result.stdout
    assert "Traceback" not in result.stderr
    # The summarisers report tokens; the coordination is set against them.
    tokens = re.search(r"work: (\d+) tokens in and (\d+) out", result.stdout)
    assert tokens is not None and int(tokens[1]) > 0 and int(tokens[2]) > 0
    assert re.search(r"coordination's share: \d+\.\d% of all units", result.stdout)


async def test_demo_against_a_given_server_again_and_again(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    # An agent that is not the demo's is on the board: the demo neither waits for it nor reports it.
    async with Agent(board, name="greeter", capabilities=["text"]):
        first = await asyncio.to_thread(run_cli, "demo", "--documents", "2", "--server", nats_server.url)
        assert first.returncode == 0, first.stderr
        assert f"on the server at {nats_server.url}\n" in first.stdout and "7 done" in first.stdout
        # Run again on the same board (from $ANTS_NATS_URL): its tasks get ids of their own.
        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ants_nats.cli", "demo", "--documents", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "ANTS_NATS_URL": nats_server.url},
        )
    assert again.returncode == 0, again.stderr
    assert "(from $ANTS_NATS_URL)" in again.stdout and "7 done" in again.stdout
    suffix = re.search(r"this run's ids end in (-[0-9a-f]{6})", again.stdout)
    assert suffix is not None
    assert (await board.get(f"publish{suffix[1]}")).status is TaskStatus.DONE

    # Each run's reputation table shows its own agents only (the first run's have ledgers too).
    def reputed(run: subprocess.CompletedProcess[str]) -> set[str]:
        table = run.stdout.split("\nreputation:\nAGENT", 1)[1].split("\nwork: ", 1)[0]
        return {row.split()[0] for row in table.splitlines()[1:] if row}

    assert reputed(first) and reputed(again) and not reputed(first) & reputed(again)
    for run in (first, again):
        assert "greeter" not in run.stdout  # not "up", not in the reputation table
        # Each completion was claimed (a quick task's claim is counted with its outcome).
        claims = [int(n) for n in re.findall(r"claims so far (\d+)", run.stdout)]
        assert claims and claims[-1] >= 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--server", "nats://127.0.0.1:{port}"), "cannot connect to NATS"),
        (("demo", "--documents", "0"), "--documents must be at least 1"),
        (("tasks", "--server", "::::not a url"), "not a NATS URL"),
        (("submit", "--bogus"), "unrecognized arguments: --bogus"),
        (("wait",), "the following arguments are required: ID"),
        # The demo's unreliable and abandoning behaviours are the demo's own, not the real agent's.
        (("agent", "--abandon"), "unrecognized arguments: --abandon"),
        (("agent", "--fail-rate", "0.5"), "unrecognized arguments: --fail-rate"),
        (("server", "--port", "99999"), "'99999' is no port: give 1-65535, or 0 for any free one"),
        (("dashboard", "--port", "-5"), "argument --port: '-5' is no port"),
        (("tasks", "--signed"), "unrecognized arguments: --signed"),  # a reading command makes no board
        (("mcp", "--transport", "http", "--port", "99999"), "argument --port: '99999' is no port"),
        (("agent", "--metrics-port", "99999"), "argument --metrics-port: '99999' is no port"),
        (("--log-level", "LOUD", "tasks"), "argument --log-level: 'LOUD' is no log level: give one of DEBUG"),
        (
            ("agent", "--name", "bad name", "--server", "nats://127.0.0.1:{port}"),
            "'bad name' is no agent name: use 1-128 of",
        ),
        (
            ("submit", "--id", "t", "--kind", "k", "--at", "tomorrow"),
            "--at 'tomorrow': give a time in ISO 8601",
        ),
        (("submit", "--id", "t", "--kind", "k", "--at", "2030-01-01T10:00"), "with its time zone"),
        (
            ("limit", "set", "llm", "--per-minute", "3", "--interval", "4", "--server", "nats://127.0.0.1:1"),
            "give --per-minute/--tokens-per-minute, or --requests/--tokens with --interval",
        ),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*(a.format(port=free_port()) for a in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no usage dump


def test_a_server_on_a_port_in_use_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("server", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ants-nats: error: nats-server exited with 1: Error listening on port: 127.0.0.1:{port}, "
        f'"listen tcp 127.0.0.1:{port}: bind: address already in use"'
    )


def test_flags_that_cannot_be_read_are_usage_errors_not_invalid_tasks() -> None:
    with pytest.raises(UsageError, match="give --at or --in, not both"):
        not_before("2030-01-01T00:00:00+00:00", "5s")
    with pytest.raises(UsageError, match="--in '5 weeks'"):
        not_before(None, "5 weeks")
    flags = argparse.Namespace(kind="k", require=[], payload="{nope", priority=0)
    with pytest.raises(UsageError, match="--payload is not JSON"):
        task_from_flags(flags)
    assert not issubclass(UsageError, InvalidTask)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.json"
    bad.write_bytes(b"\xff\xfe[]")
    result = run_cli("submit", str(bad), "--server", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"ants-nats: error: {bad}: not UTF-8 text (byte 0)"


def test_the_library_alone_writes_nothing_to_stdout_and_only_warnings_to_stderr() -> None:
    script = (
        "import asyncio\n"
        "from ants_nats import EmbeddedServer, Task, TaskBoard\n"
        "async def main():\n"
        "    async with EmbeddedServer() as s, TaskBoard.connect(s.url) as board:\n"
        "        await board.submit(Task(id='quiet', kind='work'))\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


async def test_config_generator_output_is_accepted_by_the_server(tmp_path: Path) -> None:
    result = run_cli("config", "--agent", "ant-1", "--observer", "watcher", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    seed = (tmp_path / "ant-1.seed").read_text().strip()
    assert oct((tmp_path / "ant-1.seed").stat().st_mode & 0o777) == "0o600"
    config = str(tmp_path / "nats-server.conf")
    async with (
        EmbeddedServer(extra_args=["-c", config]) as server,
        TaskBoard.connect(server.url, seed=seed) as board,
    ):
        assert (await board.submit(Task(id="ok", kind="work"))).ready


def test_config_without_users_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("config", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "name at least one --agent, --observer or --ledger" in result.stderr


async def test_agent_submit_and_the_inspection_commands(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    url = nats_server.url
    async with TaskBoard.connect(url) as board:  # a fresh board for this module's server
        await board.all_tasks()
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ants_nats.cli",
        "agent",
        "--server",
        url,
        "--name",
        "cli-agent",
        "--cap",
        "shout",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        assert b"serving shout" in await asyncio.wait_for(agent.stdout.readline(), 20)
        submitted = run_cli(
            "submit",
            "--server",
            url,
            "--id",
            "c1",
            "--kind",
            "echo",
            "--require",
            "shout",
            "--payload",
            '{"say": "hi"}',
            "--priority",
            "3",
            "--json",
        )
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)[0]["task"]["id"] == "c1"
        assert json.loads(submitted.stdout)[0]["task"]["priority"] == 3
        async with TaskBoard.connect(url) as board:
            await board.wait(["c1"], timeout=20)
        tasks = json.loads(run_cli("tasks", "--server", url, "--json").stdout)
        assert [(t["task"]["id"], t["status"], t["result"]) for t in tasks if t["task"]["id"] == "c1"] == [
            ("c1", "done", {"say": "hi"})
        ]
        assert "c1" in run_cli("tasks", "--server", url).stdout
        agents = json.loads(run_cli("agents", "--server", url, "--json").stdout)
        assert [a["name"] for a in agents] == ["cli-agent"]
        trail = run_cli("trail", "--server", url, "--subject", "ants.trail.task.*.c1.*", "--json").stdout
        assert [json.loads(line)["kind"] for line in trail.splitlines()][-1] == "task.completed"
        assert run_cli("reputation", "--server", url, "--json").returncode == 0
        # Without --json the event's data is on its line too.
        lines = run_cli("trail", "--server", url, "--subject", "ants.trail.task.submitted.c1.*").stdout
        assert '"kind":"echo"' in lines
    finally:
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), 20) == 0


def test_submit_rejects_bad_files_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.json"
    bad.write_text("{nope")
    result = run_cli("submit", "--server", "nats://127.0.0.1:1", str(bad))
    assert result.returncode == 2 and "not JSON" in result.stderr
    result = run_cli("submit", "--server", "nats://127.0.0.1:1")
    assert result.returncode == 2 and "--id and --kind" in result.stderr
    result = run_cli("tasks", "--server", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


async def test_ctrl_c_stops_the_demo_and_all_its_processes() -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ants_nats.cli",
        "demo",
        "--documents",
        "500",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert demo.stdout is not None and demo.stderr is not None
    url = ""
    while True:  # wait until the swarm is up: the server URL, then the agents
        line = (await asyncio.wait_for(demo.stdout.readline(), 30)).decode()
        assert line, "demo ended early"
        url = line.split(" at ")[-1].strip() if "embedded JetStream server" in line else url
        if "agent up" in line:
            break
    demo.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(demo.communicate(), 30)
    assert demo.returncode == 130
    assert "interrupted, stopped cleanly" in err.decode()
    assert url and _processes_mentioning(url) == []


def _processes_mentioning(text: str) -> list[Path]:
    """Processes whose command line contains ``text`` (the demo's agents name its server URL)."""
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc_dir / "cmdline").read_bytes():
                found.append(proc_dir)
        except OSError:
            continue  # ended while we looked
    return found


async def test_submit_reads_yaml_files(nats_server: EmbeddedServer, tmp_path: Path) -> None:
    tasks = tmp_path / "pipeline.yaml"
    tasks.write_text(
        "- {id: y-fetch, kind: fetch, requires: [net]}\n"
        "- id: y-parse\n  kind: parse\n  depends_on: [y-fetch]\n  payload: {lang: en}\n"
    )
    result = await asyncio.to_thread(run_cli, "submit", "--server", nats_server.url, str(tasks), "--json")
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    assert [(r["task"]["id"], r["waiting_on"]) for r in submitted] == [
        ("y-fetch", []),
        ("y-parse", ["y-fetch"]),
    ]
    broken = tmp_path / "broken.yml"
    broken.write_text("- {id: [unclosed")
    result = await asyncio.to_thread(run_cli, "submit", "--server", nats_server.url, str(broken))
    assert result.returncode == 2 and "not YAML" in result.stderr


async def test_a_server_without_jetstream_is_named_at_once() -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        find_server_binary(),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:  # until it listens
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        result = await asyncio.to_thread(run_cli, "tasks", "--server", f"nats://127.0.0.1:{port}")
        # A JetStream that does not answer is ServerUnavailable (to try again), not a refusal.
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            with pytest.raises(ServerUnavailable):
                await replay(nc.jetstream(), TRAIL_STREAM, "ants.trail.>", action="replay")
            with pytest.raises(ServerUnavailable):
                await last_of_each(nc.jetstream(), TRAIL_STREAM, ["ants.trail.x"], action="read")
        finally:
            await nc.close()
    finally:
        server.terminate()
        await server.wait()
    assert result.returncode == 2
    assert "JetStream is not enabled" in result.stderr


async def test_sigterm_stops_the_embedded_server_and_cleans_up() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ants_nats.cli", "server", "--port", str(port), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode()
    assert f"127.0.0.1:{port}" in line
    store = Path(line.split("(store ", 1)[1].split(")", 1)[0])
    assert os.path.exists(store)  # noqa: ASYNC240 (a one-off check)
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await proc.wait() == 0
    assert not os.path.exists(store)  # noqa: ASYNC240 (its temporary store is gone)
    with pytest.raises(OSError):  # and so is the nats-server child
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_empty_reputation_table_says_where_scores_come_from(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    shown = await asyncio.to_thread(run_cli, "reputation", "--server", nats_server.url)
    assert shown.returncode == 0 and "ants-ledger" in shown.stdout


async def test_fail_unroutable_fails_at_once_naming_the_kind(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    agent = Agent(board, name="echoer", capabilities=["echo"])

    @agent.handler("echo")  # the only kind it handles
    async def echo(task: Task, ctx: TaskContext) -> JsonValue:
        return task.payload

    async with agent:
        submitted = await asyncio.to_thread(
            run_cli,
            "submit",
            "--server",
            nats_server.url,
            "--id",
            "f1",
            "--kind",
            "nohandler",
            "--require",
            "echo",
            "--fail-unroutable",
        )
    assert submitted.returncode == 0, submitted.stderr
    record = await board.get("f1")
    assert record.task.fail_unroutable
    assert record.status is TaskStatus.FAILED
    assert record.error == "no live agent handles kind 'nohandler' with [echo]"


async def test_a_long_wait_says_what_it_waits_for(nats_server: EmbeddedServer, board: TaskBoard) -> None:
    # Nobody can take u1: the wait says so on stderr (after PROGRESS_AFTER_S) instead of
    # staying silent, and on timeout lists it with why it waits (exit 2).
    url = nats_server.url
    submitted = await asyncio.to_thread(
        run_cli, "submit", "--server", url, "--id", "u1", "--kind", "echo", "--require", "nosuchcap",
        "--wait", "--timeout", "8",
    )  # fmt: skip
    assert submitted.returncode == 2, submitted.stderr
    progress = [line for line in submitted.stderr.splitlines() if line.startswith("waiting (")]
    assert progress and "for 1 of 1 task(s): u1: " in progress[0] and "nosuchcap" in progress[0]
    assert "u1" in submitted.stdout and "Traceback" not in submitted.stderr
    # A quick wait prints no progress at all; a timeout that is no time is refused.
    await board.cancel("u1")
    quick = await asyncio.to_thread(run_cli, "wait", "u1", "--server", url)
    assert quick.returncode == 1 and "waiting (" not in quick.stderr
    never = ("submit", "--id", "u2", "--kind", "x", "--wait", "--timeout", "0")
    for flags in (("wait", "u1", "--timeout", "-1"), ("wait", "u1", "--timeout", "nan"), never):
        refused = await asyncio.to_thread(run_cli, *flags, "--server", url)
        assert refused.returncode == 2 and "give a number of seconds above 0" in refused.stderr
    with pytest.raises(TaskNotFound):
        await board.get("u2")  # refused before anything was submitted


async def test_a_result_too_big_to_be_inline_is_shown_not_null(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    agent = Agent(board, name="bulky", capabilities=["big"])

    @agent.handler("big")
    async def big(task: Task, ctx: TaskContext) -> JsonValue:
        return "x" * 100_000  # above BoardConfig.inline_bytes: kept as an artifact

    url = nats_server.url
    async with agent:
        waited = await asyncio.to_thread(
            run_cli, "submit", "--id", "big1", "--kind", "big", "--wait", "--server", url
        )
        await board.submit(Task(id="big2", kind="big"))
        await board.wait(["big2"], timeout=20)
    # A table says where the result is (what it shows of it would be 60 characters); JSON has it.
    note = "result: 100.0 kB in ants_artifacts (ants-nats get big1)"
    assert waited.returncode == 0, waited.stderr
    assert note in waited.stdout and "null" not in waited.stdout
    as_json = json.loads((await asyncio.to_thread(run_cli, "wait", "big1", "--json", "--server", url)).stdout)
    assert as_json[0]["result"] == "x" * 100_000 and as_json[0]["result_ref"]["size"] > 100_000
    listed = await asyncio.to_thread(run_cli, "tasks", "--server", url)
    assert note in listed.stdout
    # An artifact gone (expired, removed) costs its result only, not the other tasks' or the wait.
    record = await board.get("big1")
    assert record.result_ref is not None
    await (await board.nc.jetstream().object_store(ARTIFACTS_BUCKET)).delete(record.result_ref.name)
    both = await asyncio.to_thread(run_cli, "wait", "big1", "big2", "--json", "--server", url)
    assert both.returncode == 0, both.stderr
    assert [(r["task"]["id"], r["result"]) for r in json.loads(both.stdout)] == [
        ("big1", None),
        ("big2", "x" * 100_000),
    ]
    assert "task.result_gone" in both.stderr


def test_the_reputation_table_shows_declines_apart() -> None:
    counts = Counts(completed=2, failed=1, expired=0, declined=7)
    ledger = AgentLedger(agent="ant-1", by_capability={"echo": counts})
    header, row = reputation_table([ledger], utcnow(), 3600.0).splitlines()
    assert header.split() == ["AGENT", "CAPABILITY", "SCORE", "DONE", "FAILED", "ABANDONED", "DECLINED"]
    assert row.split() == ["ant-1", "echo", "0.50", "2", "1", "0", "7"]


async def test_listing_a_large_board_shows_the_newest_and_filters(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    url = nats_server.url
    await board.submit_many([Task(id=f"t{i:03d}", kind="even" if i % 2 == 0 else "odd") for i in range(120)])
    await board.cancel("t007", "not wanted")

    def listed(*flags: str) -> list[dict[str, Any]]:
        result = run_cli("tasks", "--server", url, "--json", *flags)
        assert result.returncode == 0, result.stderr
        shown: list[dict[str, Any]] = json.loads(result.stdout)
        return shown

    newest = listed("--limit", "5")
    assert [t["task"]["id"] for t in newest] == ["t007", "t119", "t118", "t117", "t116"]
    assert [t["task"]["id"] for t in listed("--status", "cancelled")] == ["t007"]
    odd = listed("--kind", "odd", "--limit", "3")
    assert [t["task"]["id"] for t in odd] == ["t007", "t119", "t117"]
    assert len(listed("--all")) == 120
    table = await asyncio.to_thread(run_cli, "tasks", "--server", url, "--limit", "10")
    assert "(10 shown, newest first; 110 more on the board" in table.stdout

    # The trail: the last events, recent ones, and a subject without the ants.trail. prefix.
    last = await asyncio.to_thread(run_cli, "trail", "--server", url, "--json", "--last", "2")
    assert [json.loads(line)["kind"] for line in last.stdout.splitlines()][-1] == "task.cancelled"
    assert len(last.stdout.splitlines()) == 2
    short = await asyncio.to_thread(
        run_cli, "trail", "--server", url, "--subject", "task.cancelled.>", "--json"
    )
    assert [json.loads(line)["ref"] for line in short.stdout.splitlines()] == ["t007"]
    assert run_cli("trail", "--server", url, "--since", "1h", "--subject", "task.cancelled.>").stdout.strip()
    wrong = await asyncio.to_thread(run_cli, "trail", "--server", url, "--subject", "ants.work.>")
    assert wrong.returncode == 2 and "is not on the trail" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    for garbled in ("bad subject", "task..completed", "task.>.t1", "task.comp*"):
        for follow in ((), ("--follow",)):
            said = await asyncio.to_thread(run_cli, "trail", "--server", url, "--subject", garbled, *follow)
            assert said.returncode == 2 and "is not a subject filter" in said.stderr, said.stderr
            assert "Traceback" not in said.stderr
    # One thing is one JSON object.
    got = await asyncio.to_thread(run_cli, "get", "t007", "--server", url, "--json")
    assert json.loads(got.stdout)["status"] == "cancelled"


def test_small_mistakes_get_one_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: t1\nkind: [unclosed\n")
    result = run_cli("submit", str(bad), "--server", "nats://127.0.0.1:1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not YAML" in result.stderr and "line" in result.stderr
    stop = run_cli("limit", "set", "llm", "--per-minute", "0", "--server", "nats://127.0.0.1:1")
    assert stop.returncode == 2 and "would stop every task needing 'llm'" in stop.stderr
    helped = run_cli("agent", "--help").stdout
    for flag in ("--name", "--capacity", "--lease-ttl"):
        assert re.search(rf"{flag}.*\n?.*default", helped), (flag, helped)
