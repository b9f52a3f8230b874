"""A bazaar across sites: a hub server holding the board's streams (JetStream domain ``hub``) and
two leaf-node servers, one per site, each with its own agents (issue "A bazaar across owners and
sites", point 1). Agents and submitters connect to their site's server and name the hub's domain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from pydantic import JsonValue

from ants_nats import Agent, EmbeddedServer, Task, TaskBoard, TaskContext, TaskStatus
from ants_nats.server import free_port, monitor_json

from .test_cli import run_cli

HUB = "hub"
LINK_TIMEOUT_S = 15.0


@asynccontextmanager
async def hub_and_sites(
    tmp_path: Path,
) -> AsyncIterator[tuple[EmbeddedServer, EmbeddedServer, EmbeddedServer]]:
    """The hub and two sites, once both sites' leaf links are up."""
    link = free_port()
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"jetstream {{ domain: {HUB} }}\nleafnodes {{ listen: 127.0.0.1:{link} }}\n")
    confs = []
    for site in ("site_a", "site_b"):
        conf = tmp_path / f"{site}.conf"
        remote = f'leafnodes {{ remotes: [ {{ url: "nats-leaf://127.0.0.1:{link}" }} ] }}\n'
        conf.write_text(f"jetstream {{ domain: {site} }}\n{remote}")
        confs.append(conf)
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(EmbeddedServer(name=HUB, extra_args=["-c", str(hub_conf)]))
        sites = [
            # Each server its own name: a hub takes one leaf link per server name.
            await stack.enter_async_context(EmbeddedServer(name=conf.stem, extra_args=["-c", str(conf)]))
            for conf in confs
        ]
        async with asyncio.timeout(LINK_TIMEOUT_S):
            # The monitoring endpoint is all there is to ask: nothing announces a leaf link.
            while len((await monitor_json(hub.monitor_port, "/leafz")).get("leafs") or []) < len(sites):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        yield hub, sites[0], sites[1]


async def test_tasks_submitted_at_one_site_are_done_at_the_other_on_the_hubs_board(tmp_path: Path) -> None:
    async with (
        hub_and_sites(tmp_path) as (hub, site_a, site_b),
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
