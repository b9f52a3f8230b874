"""Periodic and one-off tasks: the NATS server fires the schedules, agents relay the firings, and
each firing submits one task with a deterministic id (no scheduler process, no clock of ours)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from nats.js.api import ConsumerConfig

from ants_nats import (
    Agent,
    EmbeddedServer,
    InvalidSchedule,
    ScheduleNotFound,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
)
from ants_nats.names import SCHEDULE_RELAY_CONSUMER, SCHEDULES_STREAM, fire_subject

from .helpers import Recorder, swarm, until_event, until_tasks
from .test_cli import run_cli

_FIRING_ID = re.compile(r"^tick-(\d{8}T\d{6}Z)$")


async def test_a_one_second_schedule_submits_one_task_per_firing(board: TaskBoard) -> None:
    seen: list[str] = []
    three = asyncio.Event()

    async def tick(task: Task, ctx: TaskContext) -> str:
        seen.append(task.id)
        if len(set(seen)) >= 3:
            three.set()
        return task.id

    schedule = await board.schedule("tick", "@every 1s", Task(id="ignored", kind="work", payload={"n": 1}))
    assert schedule.template.id == "tick"
    added = await until_event(board, "schedule.added", "tick")
    assert added.data == {"when": "@every 1s"}
    agents = [Agent(board, name=f"ticker{i}") for i in range(2)]
    for agent in agents:
        agent.handler("work")(tick)
    async with agents[0], agents[1]:
        await asyncio.wait_for(three.wait(), 20)
    await board.unschedule("tick")
    assert await board.schedules() == []

    stamps = sorted(m.group(1) for m in map(_FIRING_ID.match, set(seen)) if m)
    assert len(stamps) == len(set(seen)) >= 3  # every task id is <name>-<UTC second>
    assert len(seen) == len(set(seen))  # no firing ran twice
    times = [datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for s in stamps]
    assert all(b > a for a, b in itertools.pairwise(times))
    records = await board.wait(seen, timeout=10)
    assert {r.status for r in records.values()} == {TaskStatus.DONE}
    assert all(r.task.payload == {"n": 1} and r.task.kind == "work" for r in records.values())


async def test_a_firing_relayed_twice_submits_one_task(board: TaskBoard) -> None:
    # A one-off schedule already due fires at once; no agent runs, so its firing waits in the stream.
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    await board.schedule("once", f"@at {at.isoformat()}", {"kind": "work"})
    js = board.nc.jetstream()
    # The same stored firing delivered again (as after a relaying agent crashed before its ack):
    # two consumers of the firing subject each hand it to the relay.
    firings = []
    for _ in range(2):
        sub = await js.pull_subscribe(
            fire_subject("once"), stream=SCHEDULES_STREAM, config=ConsumerConfig(inactive_threshold=10)
        )
        (msg,) = await sub.fetch(1, timeout=10)
        firings.append(msg)
    records = [await board._schedules.relay(msg) for msg in firings]
    expected = f"once-{at.strftime('%Y%m%dT%H%M%SZ')}"  # the @at time, whenever it was relayed
    assert [r.task.id for r in records if r is not None] == [expected, expected]
    tasks = await board.all_tasks()
    assert [r.task.id for r in tasks] == [expected]
    submitted = await board.trail.history(expected)
    assert [e.kind for e in submitted].count("task.submitted") == 1


async def test_firings_missed_with_no_agent_running_collapse_to_one(board: TaskBoard) -> None:
    await board.schedule("catchup", "@every 1s", {"kind": "work"})
    js = board.nc.jetstream()
    # Three firings while no agent relays them ...
    watcher = await js.subscribe(fire_subject("catchup"), stream=SCHEDULES_STREAM, ordered_consumer=True)
    for _ in range(3):
        await watcher.next_msg(timeout=10)
    await watcher.unsubscribe()
    # ... leave one for the relay: the first agent to start submits one catch-up task, not three.
    relay = await js.consumer_info(SCHEDULES_STREAM, SCHEDULE_RELAY_CONSUMER)
    assert relay.num_pending == 1
    await board.unschedule("catchup", by="operator")
    info = await js.stream_info(SCHEDULES_STREAM, subjects_filter=fire_subject("catchup"))
    assert not info.state.subjects  # removing a schedule drops its unrelayed firing too
    assert (await js.consumer_info(SCHEDULES_STREAM, SCHEDULE_RELAY_CONSUMER)).num_pending == 0


async def test_a_cron_line_gets_seconds_and_a_name_is_replaced_not_doubled(board: TaskBoard) -> None:
    await board.schedule("nightly", "0 3 * * *", {"kind": "report", "requires": ["pdf"]})
    await board.schedule("nightly", "30  4 * * *", {"kind": "report", "requires": ["pdf"]})
    await board.schedule("hourly", "@hourly", {"kind": "sweep"})
    await board.schedule("once", "@at 2099-01-01T09:00:00+02:00", {"kind": "party"})
    listed = {s.name: s for s in await board.schedules()}
    assert {name: s.when for name, s in listed.items()} == {
        "hourly": "@hourly",
        "nightly": "0 30 4 * * *",
        "once": "@at 2099-01-01T07:00:00Z",
    }
    assert listed["nightly"].template.requires == ("pdf",)
    assert await board.all_tasks() == []  # nothing has fired


@pytest.mark.parametrize(
    ("name", "when", "template", "message"),
    [
        ("bad name", "@hourly", {"kind": "work"}, "invalid schedule name"),
        ("x" * 112, "@hourly", {"kind": "work"}, "invalid schedule name"),
        ("cron", "* * * *", {"kind": "work"}, "has 4 fields"),
        ("cron", "61 * * * *", {"kind": "work"}, "the server refused schedule 'cron'"),
        ("fast", "@every 100ms", {"kind": "work"}, "the server refused"),
        ("naive", "@at 2030-01-01T00:00:00", {"kind": "work"}, "needs a time zone"),
        ("garbled", "@at tomorrow", {"kind": "work"}, "not an ISO 8601 time"),
        ("empty", " ", {"kind": "work"}, "needs a timing"),
        ("dep", "@hourly", {"kind": "work", "depends_on": ["a"]}, "cannot depend on other tasks"),
        ("kindless", "@hourly", {"payload": 1}, "template of schedule 'kindless'"),
        ("huge", "@hourly", {"kind": "work", "payload": "x" * 70_000}, "the limit is"),
    ],
)
async def test_bad_schedules_are_refused_and_nothing_is_written(
    board: TaskBoard, name: str, when: str, template: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        await board.schedule(name, when, template)
    assert await board.schedules() == []


async def test_removing_an_unknown_schedule_is_a_clear_error(board: TaskBoard) -> None:
    with pytest.raises(ScheduleNotFound, match="no schedule named 'ghost'"):
        await board.unschedule("ghost")


async def test_schedule_add_ls_rm_from_the_command_line(
    nats_server: EmbeddedServer, board: TaskBoard
) -> None:
    url = nats_server.url
    added = await asyncio.to_thread(
        run_cli,
        *("schedule", "add", "tick", "@every 1s", "--kind", "work", "--payload", '{"n": 2}'),
        *("--json", "--server", url),
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)[0]["template"]["payload"] == {"n": 2}

    listed = await asyncio.to_thread(run_cli, "schedule", "ls", "--server", url)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^tick\s+@every 1s\s+work", listed.stdout, re.MULTILINE), listed.stdout

    # The server fires it: a task appears with no agent and no scheduler of ours running, once an
    # agent relays the firing.
    async with swarm(board, Recorder(), 1):
        fired = await until_tasks(board, lambda records: any(_FIRING_ID.match(i) for i in records))
    assert any(_FIRING_ID.match(task_id) for task_id in fired)

    gone = await asyncio.to_thread(run_cli, "schedule", "rm", "tick", "--server", url)
    assert gone.returncode == 0 and "removed schedule tick" in gone.stdout
    again = await asyncio.to_thread(run_cli, "schedule", "rm", "tick", "--server", url)
    assert again.returncode == 2
    assert again.stderr.strip() == "ants-nats: error: no schedule named 'tick'"
    bad = await asyncio.to_thread(run_cli, "schedule", "add", "x", "* *", "--kind", "work", "--server", url)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "has 2 fields" in bad.stderr
    empty = await asyncio.to_thread(run_cli, "schedule", "ls", "--server", url)
    assert "no schedules" in empty.stdout
    removed = await until_event(board, "schedule.removed", "tick")
    assert removed.ref == "tick"
