"""Access control enforced by the NATS server, from a generated configuration."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AgentCard,
    ArtifactRef,
    BoardNotFound,
    Budget,
    EmbeddedServer,
    Identity,
    PermissionDenied,
    Task,
    TaskBoard,
    TaskContext,
    TaskNotFound,
    TaskStatus,
    Trail,
    connect,
    read_seed,
)
from ants_nats._connect import publishing_to, refusable
from ants_nats._store import Bucket, publish
from ants_nats.access import LEDGER_CONSUMER, server_config
from ants_nats.models import Limit, RateWindow
from ants_nats.names import (
    LIMITS_BUCKET,
    RATES_BUCKET,
    TRAIL_STREAM,
    WORK_STREAM,
    schedule_subject,
    trail_filter,
)

from .conftest import AGENT, LEDGER, OBSERVER, OPERATOR
from .helpers import on_log
from .test_cli import run_cli


async def test_an_agent_works_under_its_permissions(secured: EmbeddedServer) -> None:
    with on_log("stream.upgrade_unavailable") as refused_upgrade:
        await _work_under_permissions(secured)
    # The agent made the board itself, every stream as it needs it: nothing to reconfigure later
    # (which it may not do).
    assert not refused_upgrade.is_set()


async def _work_under_permissions(secured: EmbeddedServer) -> None:
    async with (
        TaskBoard.connect(secured.url, seed=AGENT.seed) as board,
        TaskBoard.connect(secured.url, seed=OPERATOR.seed) as operator,
    ):
        agent = Agent(board, name="a", agent_id="ant-a", identity=AGENT)

        @agent.handler("work")
        async def handle(task: Task, ctx: TaskContext) -> JsonValue:
            ctx.usage(tokens_in=3)
            return (await ctx.put_artifact("notes", b"kept aside")).model_dump(mode="json")

        # The operator limits the work and schedules some; agents take from the window and relay.
        await operator.set_limit("any", requests=10, tokens=1000)
        due = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        await operator.schedule("nightly", f"@at {due.isoformat()}", {"kind": "work"})
        fired = f"nightly-{due.strftime('%Y%m%dT%H%M%SZ')}"
        # A task it submitted an agent may cancel.
        await board.submit(Task(id="unwanted", kind="later"))
        assert (await board.cancel("unwanted")).status is TaskStatus.CANCELLED
        async with agent:
            assert (await board.directory.card("ant-a")) is not None
            await board.submit(Task(id="allowed", kind="work"), budget=Budget(id="allowed", tokens=100))
            final = await board.wait(["allowed", fired], timeout=20)
        assert {r.status for r in final.values()} == {TaskStatus.DONE}
        assert (await board.budget("allowed")).spent.tokens == 3
        window = await Bucket(board.nc.jetstream(), RATES_BUCKET).get("any")
        assert window is not None
        assert sum(s.requests for s in RateWindow.model_validate_json(window.value).slots) >= 2
        notes = ArtifactRef.model_validate(await board.result("allowed"))
        assert await board.get_artifact(notes) == b"kept aside"
        completed = [e for e in await board.trail.history("allowed") if e.kind == "task.completed"]
        assert [e.by for e in completed] == ["ant-a"]


async def test_only_an_operator_sets_limits_and_schedules(secured: EmbeddedServer) -> None:
    async with (
        TaskBoard.connect(secured.url, seed=AGENT.seed) as board,
        TaskBoard.connect(secured.url, seed=OPERATOR.seed) as operator,
    ):
        before, scheduled = await board.limits(), await board.schedules()
        # An agent that would hold back everyone serving "slow" (no requests a minute) is refused,
        # through the library and writing the key itself alike.
        with pytest.raises(PermissionDenied, match=r"ants_limits\.slow: refused by the server"):
            await board.set_limit("slow", requests=0)
        choke = Limit(capability="slow", requests=0).model_dump_json().encode()
        with pytest.raises(PermissionDenied, match=r"ants_limits\.slow"):
            await Bucket(board.nc.jetstream(), LIMITS_BUCKET).put("slow", choke)
        with pytest.raises(PermissionDenied, match=r"ants\.schedule\.flood"):
            await board.schedule("flood", "@every 1s", {"kind": "work"})
        assert await board.limits() == before and await board.schedules() == scheduled

        await operator.set_limit("slow", requests=5)
        await operator.schedule("weekly", "@weekly", {"kind": "work"})
        # Nor may an agent lift what the operator set.
        with pytest.raises(PermissionDenied, match=r"ants_limits\.slow"):
            await board.remove_limit("slow")
        with pytest.raises(PermissionDenied, match=r"remove schedule weekly: refused by the server"):
            await board.unschedule("weekly")
        assert [limit.requests for limit in await board.limits() if limit.capability == "slow"] == [5]
        assert "weekly" in {s.name for s in await board.schedules()}

        await operator.remove_limit("slow")
        await operator.unschedule("weekly")
        assert await board.limits() == before and await board.schedules() == scheduled


async def _refused(nc: Client, subject: str, body: JsonValue = None) -> None:
    """The server refuses ``subject`` to the user of ``nc`` (reported at once, not as a timeout)."""
    request = nc.request(subject, json.dumps(body or {}).encode(), timeout=5)
    with pytest.raises(PermissionDenied):
        await refusable(nc, publishing_to(subject), request, action=f"request {subject}")


async def test_an_agent_cannot_destroy_or_reconfigure_shared_state(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        await board.submit(Task(id="precious", kind="work"))
        js = board.nc.jetstream()
        route = await js.consumer_info(WORK_STREAM, "work_any")
        for subject in (
            "$JS.API.STREAM.PURGE.KV_ants_tasks",
            "$JS.API.STREAM.DELETE.ANTS_TRAIL",
            "$JS.API.STREAM.UPDATE.KV_ants_tasks",
            "$JS.API.STREAM.MSG.DELETE.ANTS_TRAIL",
            "$JS.API.STREAM.CREATE.ANTS_ELSEWHERE",
            "$JS.API.CONSUMER.DELETE.ANTS_WORK.work_any",
            "$JS.API.CONSUMER.PAUSE.ANTS_WORK.work_any",
            # An "ephemeral" request naming the route's consumer would change its settings.
            f"$JS.API.CONSUMER.CREATE.{WORK_STREAM}",
            # The ledger's events are its own: taking or acknowledging one keeps it from counting.
            f"$JS.API.CONSUMER.MSG.NEXT.{TRAIL_STREAM}.{LEDGER_CONSUMER}",
            f"$JS.ACK.{TRAIL_STREAM}.{LEDGER_CONSUMER}.1.1.1.0.0",
        ):
            await _refused(board.nc, subject)
        assert (await board.get("precious")).status is TaskStatus.PENDING
        assert (await js.stream_info(TRAIL_STREAM)).config.name == TRAIL_STREAM
        assert (await js.consumer_info(WORK_STREAM, "work_any")).config == route.config


async def test_announcing_another_agents_card_is_refused(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        impersonation = AgentCard(id="ant-b", name="b", load=0, capacity=1, software="x")
        with pytest.raises(PermissionDenied, match=r"\$KV\.ants_agents\.ant-b"):
            await board.directory.announce(impersonation)


async def test_an_observer_reads_but_cannot_write(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=AGENT.seed) as board:
        await board.submit(Task(id="visible", kind="work"))
    async with TaskBoard.connect(secured.url, seed=OBSERVER.seed) as observer:
        assert (await observer.get("visible")).task.id == "visible"
        assert "visible" in {r.task.id for r in await observer.all_tasks()}
        assert "task.submitted" in {e.kind for e in await observer.trail.history("visible")}
        # Refused as soon as the server says so, not after the request's 5 s timeout.
        async with asyncio.timeout(2.5):
            with pytest.raises(PermissionDenied, match="refused by the server"):
                await observer.submit(Task(id="sneaky", kind="work"))
        with pytest.raises(TaskNotFound):  # nothing was written
            await observer.get("sneaky")
        with pytest.raises(PermissionDenied):
            await observer.trail.mark("graffiti", key="wall")
        # Nor may it change how a shared consumer delivers (a route's, here), nor take a ticket.
        with pytest.raises(nats.errors.TimeoutError):
            await observer.nc.jetstream().add_consumer(
                "ANTS_WORK", ConsumerConfig(durable_name="work_any", ack_wait=1.0), timeout=1
            )
        await _refused(observer.nc, f"$JS.API.CONSUMER.MSG.NEXT.{WORK_STREAM}.work_any")


async def test_an_observer_cannot_create_the_board(tmp_path: Path) -> None:
    config = tmp_path / "auth.conf"
    config.write_text(server_config({}, {"watcher": OBSERVER.public_key}))
    async with EmbeddedServer(extra_args=["-c", str(config)]) as empty:
        async with asyncio.timeout(2.5):  # refused at once, not retried as if the server were slow
            with pytest.raises(PermissionDenied, match="open bucket ants_tasks"):
                async with TaskBoard.connect(empty.url, seed=OBSERVER.seed):
                    pass
        # A reader creates nothing: it says there is no board yet, in one line.
        with pytest.raises(BoardNotFound, match="no board on this server yet"):
            async with TaskBoard.connect(empty.url, seed=OBSERVER.seed, create=False):
                pass
        seed_file = tmp_path / "watcher.seed"
        seed_file.write_text(OBSERVER.seed)
        for reading in (
            ["tasks"],
            ["get", "t1"],
            ["agents"],
            ["trail", "--last", "5"],
            ["dashboard", "--port", "0"],
        ):
            shown = await asyncio.to_thread(
                run_cli, *reading, "--server", empty.url, "--creds", str(seed_file)
            )
            assert shown.returncode == 2, (reading, shown.stderr)
            assert shown.stderr.count("\n") == 1 and "no board on this server yet" in shown.stderr


async def test_unknown_credentials_are_rejected(secured: EmbeddedServer) -> None:
    with pytest.raises(PermissionDenied, match="rejected the credentials"):
        async with connect(secured.url, seed=Identity.generate().seed):
            pass


async def test_the_ledger_service_takes_from_its_own_consumer(secured: EmbeddedServer) -> None:
    async with connect(secured.url, seed=LEDGER.seed) as nc:
        await (await Trail.open(nc)).mark("counted", key="once")
        js = nc.jetstream()
        mark = trail_filter("mark.counted", "once")
        await js.add_consumer(TRAIL_STREAM, ConsumerConfig(durable_name=LEDGER_CONSUMER, filter_subject=mark))
        sub = await js.pull_subscribe_bind(stream=TRAIL_STREAM, consumer=LEDGER_CONSUMER)
        (event,) = await sub.fetch(1, timeout=5)
        await event.ack_sync(timeout=5)  # answered: the server took the acknowledgement


async def test_config_writes_an_operator_who_alone_sets_limits(tmp_path: Path) -> None:
    args = ["config", "--agent", "ant-1", "--operator", "boss", "--out", str(tmp_path)]
    made = await asyncio.to_thread(run_cli, *args)
    assert made.returncode == 0
    # It says how to start everything, with the files it wrote.
    assert f"nats-server -js -c {tmp_path / 'nats-server.conf'}" in made.stdout
    assert f"ants-nats agent --name ant-1 --cap CAP --creds {tmp_path / 'ant-1.seed'}" in made.stdout
    assert f"ants-nats limit set CAP --per-minute N --creds {tmp_path / 'boss.seed'}" in made.stdout
    async with (
        EmbeddedServer(extra_args=["-c", str(tmp_path / "nats-server.conf")]) as server,
        TaskBoard.connect(server.url, seed=read_seed(tmp_path / "ant-1.seed")) as board,
        TaskBoard.connect(server.url, seed=read_seed(tmp_path / "boss.seed")) as operator,
    ):
        with pytest.raises(PermissionDenied):
            await board.set_limit("llm", requests=0)
        with pytest.raises(PermissionDenied, match=r"ants\.schedule\.x"):
            await publish(board.nc.jetstream(), schedule_subject("x"), b"{}")
        await operator.set_limit("llm", requests=60)
        assert [limit.capability for limit in await board.limits()] == ["llm"]
    # An operator is an agent already: one name, one user, one role.
    twice = ["config", "--agent", "boss", "--operator", "boss", "--out", str(tmp_path / "again")]
    refused = await asyncio.to_thread(run_cli, *twice)
    assert refused.returncode != 0 and "a name was given twice" in refused.stderr


async def test_the_command_line_connects_as_a_configured_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command that talks to NATS takes --creds (or $ANTS_NATS_CREDS; --seed-file and
    $ANTS_NATS_SEED_FILE are the older names): an operator
    sets a limit, an agent is refused with one line, an observer reads, and an agent process works
    as its user."""
    auth = tmp_path / "auth"
    args = ["config", "--agent", "ant-1", "--operator", "boss", "--observer", "watcher", "--out", str(auth)]
    assert (await asyncio.to_thread(run_cli, *args)).returncode == 0
    async with EmbeddedServer(extra_args=["-c", str(auth / "nats-server.conf")]) as server:

        def as_user(user: str, *command: str) -> subprocess.CompletedProcess[str]:
            return run_cli(*command, "--server", server.url, "--creds", str(auth / f"{user}.seed"))

        refused = await asyncio.to_thread(as_user, "ant-1", "limit", "set", "slow", "--per-minute", "1")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        last = refused.stderr.splitlines()[-1]
        assert last.startswith("ants-nats: error: ") and "refused by the server" in last
        allowed = await asyncio.to_thread(as_user, "boss", "limit", "set", "slow", "--per-minute", "5")
        assert allowed.returncode == 0, allowed.stderr
        listed = await asyncio.to_thread(as_user, "watcher", "limit", "ls", "--json")
        assert [limit["capability"] for limit in json.loads(listed.stdout)] == ["slow"]
        # Without credentials the server turns the command line away, in one line.
        anonymous = await asyncio.to_thread(run_cli, "tasks", "--server", server.url)
        assert anonymous.returncode == 2 and anonymous.stderr.count("\n") == 1
        monkeypatch.setenv("ANTS_NATS_CREDS", str(auth / "watcher.seed"))
        from_env = await asyncio.to_thread(run_cli, "tasks", "--server", server.url)
        assert from_env.returncode == 0, from_env.stderr
        monkeypatch.delenv("ANTS_NATS_CREDS")
        # An agent process is its user: its id is the user's name, and it works.
        agent = subprocess.Popen(  # noqa: ASYNC220 (its output is read in a thread below)
            [
                sys.executable,
                "-m",
                "ants_nats.cli",
                "agent",
                "--name",
                "ant-1",
                "--cap",
                "echo",
                "--server",
                server.url,
                "--seed-file",
                str(auth / "ant-1.seed"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            started = await asyncio.to_thread(agent.stdout.readline) if agent.stdout else ""
            assert started.startswith("agent ant-1 serving echo")
            submitted = await asyncio.to_thread(
                as_user,
                "boss",
                "submit",
                "--id",
                "e1",
                "--kind",
                "echo",
                "--require",
                "echo",
                "--payload",
                '"hi"',
                "--wait",
                "--timeout",
                "20",
            )
            assert submitted.returncode == 0, submitted.stderr
        finally:
            agent.terminate()
            await asyncio.to_thread(agent.wait, 20)


async def test_each_role_runs_the_command_line_it_may_and_is_refused_the_rest_in_one_line(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "auth"
    made = ["config", "--agent", "ant-1", "--operator", "boss", "--observer", "watcher", "--out", str(auth)]
    assert (await asyncio.to_thread(run_cli, *made)).returncode == 0
    allowed = [
        ("boss", "submit", "--id", "r1", "--kind", "later"),  # the operator sets the board up first
        ("boss", "limit", "set", "llm", "--per-minute", "5"),
        ("boss", "schedule", "add", "nightly", "@every 1h", "--kind", "later"),
        ("ant-1", "submit", "--id", "r2", "--kind", "later"),
        ("ant-1", "cancel", "r2"),
        *(
            ("watcher", *reading)
            for reading in (
                ("tasks",),
                ("get", "r1"),
                ("get", "r2"),
                ("agents",),
                ("reputation",),
                ("trail", "--last", "5"),
                ("usage",),
                ("limit", "ls"),
                ("schedule", "ls"),
            )
        ),
    ]
    refused = [
        ("ant-1", "limit", "set", "llm", "--per-minute", "9"),
        ("ant-1", "schedule", "add", "hourly", "@every 1h", "--kind", "later"),
        ("ant-1", "schedule", "rm", "nightly"),
        ("watcher", "submit", "--id", "r3", "--kind", "later"),
        ("watcher", "cancel", "r1"),
        ("watcher", "limit", "rm", "llm"),
    ]
    async with EmbeddedServer(extra_args=["-c", str(auth / "nats-server.conf")]) as server:

        def as_user(user: str, *command: str) -> subprocess.CompletedProcess[str]:
            return run_cli(*command, "--server", server.url, "--creds", str(auth / f"{user}.seed"))

        for user, *command in allowed:
            ran = await asyncio.to_thread(as_user, user, *command)
            assert ran.returncode == 0, (user, command, ran.stderr)
        for user, *command in refused:
            ran = await asyncio.to_thread(as_user, user, *command)
            assert ran.returncode == 2, (user, command, ran.stdout, ran.stderr)
            assert ran.stderr.count("\n") == 1 and "refused by the server" in ran.stderr, (
                user,
                command,
                ran.stderr,
            )
