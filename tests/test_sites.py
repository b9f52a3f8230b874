"""A bazaar across sites: a hub server holding the board's streams (JetStream domain ``hub``) and
two leaf-node servers, one per site, each with its own agents (issue "A bazaar across owners and
sites", point 1). Agents and submitters connect to their site's server and name the hub's domain."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from pydantic import JsonValue

from ants_nats import Agent, BoardConfig, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.server import monitor_json

from .helpers import EventDict, log_spy, until_tasks
from .network import HUB, LINK_TIMEOUT_S, hub_and_sites
from .test_cli import run_cli


async def test_tasks_submitted_at_one_site_are_done_at_the_other_on_the_hubs_board(tmp_path: Path) -> None:
    async with (
        hub_and_sites(tmp_path) as (hub, site_a, site_b, _),
        TaskBoard.connect(site_a.url, name="site-a", js_domain=HUB) as at_a,
        TaskBoard.connect(site_b.url, name="site-b", js_domain=HUB) as at_b,
    ):
        shouter = Agent(at_a, name="shouter", capabilities=["shout"])
        echoer = Agent(at_b, name="echoer", capabilities=["echo"])

        @echoer.handler("echo")
        async def echo(task: Task, ctx: TaskContext) -> JsonValue:
            return task.payload

        @shouter.handler("shout")
        async def shout(task: Task, ctx: TaskContext) -> JsonValue:
            said = (await ctx.dependency_results())["said"]
            return str(said).upper()

        async with shouter, echoer:
            # Submitted at site A: the first step runs at site B, the second back at site A.
            await at_a.submit_many(
                [
                    Task(id="said", kind="echo", requires=("echo",), payload="hello"),
                    Task(id="loud", kind="shout", requires=("shout",), depends_on=("said",)),
                ]
            )
            assert await at_a.result("loud", timeout=30) == "HELLO"
            final = await at_b.get("said")
            assert final.status is TaskStatus.DONE and [a.agent for a in final.attempts] == [echoer.id]
            # Each site sees the cards of both; the command line at a site names the hub's domain.
            assert {c.id for c in await at_a.directory.cards()} == {shouter.id, echoer.id}
            listed = await asyncio.to_thread(
                run_cli, "tasks", "--server", site_b.url, "--js-domain", HUB, "--json"
            )
            assert {t["task"]["id"] for t in json.loads(listed.stdout)} == {"said", "loud"}, listed.stderr
        # The board's streams live on the hub, none at the sites.
        at_hub = await monitor_json(hub.monitor_port, "/jsz?streams=true")
        streams = {
            s["name"]
            for account in at_hub.get("account_details", [])
            for s in account.get("stream_detail", [])
        }
        assert {"KV_ants_tasks", "ANTS_WORK", "ANTS_TRAIL"} <= streams
        for site in (site_a, site_b):
            assert (await monitor_json(site.monitor_port, "/jsz")).get("streams", 0) == 0


LEASE_TTL_S = 3.0


async def test_a_site_cut_off_longer_than_a_lease_loses_nothing_and_does_nothing_twice(
    tmp_path: Path,
) -> None:
    config = BoardConfig(lease_ttl=LEASE_TTL_S)
    release = asyncio.Event()
    runs: Counter[tuple[str, str]] = Counter()

    async def work(task: Task, ctx: TaskContext) -> JsonValue:
        runs[task.id, ctx.lease.agent_id] += 1
        if task.id.startswith("held") and ctx.lease.agent_id.startswith("ant-a"):
            await release.wait()  # still running when its site is cut off
        return ctx.lease.agent_id

    heard: list[EventDict] = []
    unreachable, reachable = asyncio.Event(), asyncio.Event()

    def spy(event: EventDict) -> None:
        heard.append(dict(event))  # (the renderer pops keys from the one it is given)
        {"agent.board_unreachable": unreachable, "agent.board_reachable": reachable}.get(
            str(event.get("event")), asyncio.Event()
        ).set()

    async with (
        hub_and_sites(tmp_path) as (hub, site_a, _, link),
        TaskBoard.connect(hub.url, name="hub-side", config=config) as at_hub,
        TaskBoard.connect(site_a.url, name="site-a", js_domain=HUB, config=config) as at_a,
    ):
        ant_a = Agent(at_a, name="ant-a", capabilities=["work"], capacity=3)
        ant_a.handler("work")(work)
        async with ant_a:
            await at_hub.submit_many([Task(id=f"held-{i}", kind="work", requires=("work",)) for i in (1, 2)])
            await until_tasks(
                at_hub, lambda r: all(f"held-{i}" in r and r[f"held-{i}"].holder == ant_a.id for i in (1, 2))
            )
            with log_spy(spy):
                link.cut()
                await unreachable.wait()  # said once, with why; it takes no work meanwhile
                said = next(e for e in heard if e.get("event") == "agent.board_unreachable")
                assert "'hub'" in str(said["why"]) and "link" in str(said["why"]), said
                # The hub side goes on: the site's claims expire on the server and are taken over.
                ant_h = Agent(at_hub, name="ant-h", capabilities=["work"])
                ant_h.handler("work")(work)
                async with ant_h:
                    await at_hub.submit(Task(id="while-cut", kind="work", requires=("work",)))
                    done = await at_hub.wait(["held-1", "held-2", "while-cut"], timeout=30)
                    release.set()  # the site's late results meet a fenced board (or no board)
                link.heal()
                await reachable.wait()
                # Back within a few seconds: work submitted now (the hub's agent gone) is the site's.
                await at_hub.submit(Task(id="after", kind="work", requires=("work",)))
                after = await at_hub.wait(["after"], timeout=LINK_TIMEOUT_S)
            assert sum(e.get("event") == "agent.board_unreachable" for e in heard) == 1  # not once a pull
        assert after["after"].result == ant_a.id
        for held in ("held-1", "held-2"):
            record = done[held]
            assert record.status is TaskStatus.DONE and record.result == ant_h.id
            assert [(a.agent, a.outcome) for a in record.attempts] == [
                (ant_a.id, "expired"),
                (ant_h.id, "completed"),
            ]
            history = [(e.kind, e.token) for e in await at_hub.trail.history(held)]
            # No lease overlap: the site's claim expired before the hub's agent claimed.
            site, hub_side = (a.token for a in record.attempts)
            assert history.index(("task.expired", site)) < history.index(("task.claimed", hub_side)), history
            assert [k for k, _ in history].count("task.completed") == 1, history
            final = await at_hub.get(held)
            assert final.result == ant_h.id and len(final.attempts) == 2  # the late result changed nothing
        assert done["while-cut"].result == ant_h.id and runs["while-cut", ant_a.id] == 0
