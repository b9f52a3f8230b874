"""compose.yaml: validated against the code everywhere, and run for real where containers run.

The static tests read the file as compose does with none of its variables set. The stack test
(``ANTS_TEST_DOCKER=1``, after ``bash scripts/containers``) brings the whole stack up under a project
name of its own, on free ports, works it from this host and takes it down again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pydantic import JsonValue
from synadia_ai.agents import Agents, DiscoverFilter, ResponseChunk

from ants_nats import AgentCard, EmbeddedServer, Task, TaskBoard, TaskStatus, TrailEvent, read_seed
from ants_nats.ledger import Ledger
from ants_nats.server import free_port

from .conftest import _docker_reachable, _docker_requested, nats_image
from .test_cli import run_cli

ROOT = Path(__file__).parents[1]
VARIABLE = re.compile(r"\$\{(\w+)(:-([^}]*))?\}")


SITES = "compose.sites.yaml"
"""The two-site variant: a hub holding the board, two leaf-node sites with their own agents."""


def compose(file: str = "compose.yaml") -> dict[str, Any]:
    """``file`` as compose reads it with none of its variables set (each takes its default)."""
    text = VARIABLE.sub(lambda m: m.group(3) or "", (ROOT / file).read_text())
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def servers(file: str) -> set[str]:
    """The services of ``file`` that are NATS servers (run from a server image)."""
    return {name for name, s in compose(file)["services"].items() if s["image"].startswith("nats:")}


@pytest.mark.parametrize("file", ["compose.yaml", SITES])
def test_every_variable_has_a_default_and_the_server_takes_flags_only(file: str) -> None:
    used = VARIABLE.findall((ROOT / file).read_text())
    assert used, f"{file} names its images and ports through variables"
    assert [name for name, default, _ in used if not default] == [], "a plain `compose up` needs no env"
    # The official images' entrypoints run nats-server when the first argument is a flag, and the
    # local scratch image's entrypoint is /nats-server itself: a command of flags suits both.
    assert servers(file) and all(
        compose(file)["services"][s]["command"][0].startswith("-") for s in servers(file)
    )


@pytest.mark.parametrize("file", ["compose.yaml", SITES])
def test_every_service_runs_an_installed_entry_point(file: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    services = compose(file)["services"]
    for name, service in services.items():
        if name in servers(file):
            continue
        program = service["command"][0]
        assert program in scripts, f"{name}: {program} is not a [project.scripts] entry point"
        assert callable(installed[program].load())
        assert service["build"] == "." and (ROOT / "Dockerfile").is_file()


async def test_the_mounted_server_config_is_the_generated_one_and_admits_every_service(
    tmp_path: Path,
) -> None:
    services = compose()["services"]
    nats = services["nats"]
    config_path = option(nats["command"], "-c")
    assert f"./deploy/auth/nats-server.conf:{config_path}:ro" in nats["volumes"]
    users = {}
    for name, service in services.items():
        seed_file = option(service.get("command", []), "--seed-file")
        if seed_file is None:
            continue
        assert seed_file.startswith("/auth/") and "./deploy/auth:/auth:ro" in service["volumes"]
        user = Path(seed_file).stem
        # Under access control an agent's id is its user's name: --name must match the seed.
        assert option(service["command"], "--name") in (None, user), name
        users[name] = user
    assert set(users) == set(services) - {"nats"}
    args = ["config", "--out", str(tmp_path), *config_roles(users.values())]
    # What the compose.yaml header tells users to run (in its own process: the command line sets
    # the process's logging, which later tests rely on).
    assert (await asyncio.to_thread(run_cli, *args)).returncode == 0
    async with EmbeddedServer(extra_args=["-c", str(tmp_path / "nats-server.conf")]) as server:
        for user in users.values():
            seed = read_seed(tmp_path / f"{user}.seed")
            async with TaskBoard.connect(server.url, seed=seed) as board:
                # Each service may announce itself under its own name: the config admits it.
                card = AgentCard(id=user, name=user, load=0, capacity=1, software="compose-test")
                await board.directory.announce(card)


def config_roles(users: Iterable[str]) -> list[str]:
    """``ants-nats config`` arguments for ``users``: the ledger service is the only writer of the
    ledger, so it has a role of its own; everyone else is an agent."""
    return [arg for user in users for arg in ("--ledger" if user == "ledger" else "--agent", user)]


# --- the stack, for real ----------------------------------------------------------------------------


def service_users() -> list[str]:
    """The users compose.yaml's services connect as (their seed files' names), in file order."""
    commands = (service.get("command", []) for service in compose()["services"].values())
    return [Path(seed).stem for command in commands if (seed := option(command, "--seed-file"))]


CLIENT = "client"
"""The user this host submits tasks as: an agent's permissions, not a service of the stack."""


def containers_script(flag: str) -> str:
    """What ``bash scripts/containers <flag>`` prints; when it fails, the test is skipped with that."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "containers"), flag], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"the compose stack cannot run here: {done.stdout.strip() or done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Stack:
    """A compose project brought up from compose.yaml, and how to reach and inspect it."""

    compose: list[str]
    engine: str
    project: str
    env: dict[str, str]
    url: str
    monitor: str
    seed: str | None

    async def run(self, *command: str) -> str:
        """``command``'s standard output; it must succeed."""
        proc = await asyncio.create_subprocess_exec(
            *command, env=self.env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, f"{shlex.join(command)} failed:\n{out.decode()}{err.decode()}"
        return out.decode()

    async def compose_run(self, *args: str) -> str:
        return await self.run(*self.compose, *args)

    async def listed(self, kind: str, *, running: bool = False) -> list[str]:
        """Ids of this project's containers, volumes or networks, as the engine lists them."""
        command = ["ps", "--all"] if kind == "container" else [kind, "ls"]
        filters = [f"label=com.docker.compose.project={self.project}"] + (
            ["status=running"] if running else []
        )
        return (await self.run(self.engine, *command, "-q", *(f"--filter={f}" for f in filters))).split()

    async def until_serving(self) -> None:
        """Return once the server answers its health check (it starts in milliseconds)."""
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:  # polling with a deadline: nothing announces readiness across the engine
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.monitor}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)


def compose_program(engine: str) -> list[str]:
    """The compose command: ``$ANTS_COMPOSE`` (say, "docker compose" against podman's socket), else
    podman-compose from this venv for podman and ``docker compose`` for Docker."""
    if os.environ.get("ANTS_COMPOSE"):
        return shlex.split(os.environ["ANTS_COMPOSE"])
    if engine != "podman":
        return ["docker", "compose"]
    program = Path(sys.executable).parent / "podman-compose"
    if not program.is_file():
        pytest.skip("podman-compose is not installed here: pip install -e '.[dev]'")
    return [str(program)]


@asynccontextmanager
async def compose_stack(tmp_path: Path, file: str = "compose.yaml") -> AsyncIterator[Stack]:
    """``file`` up on free ports (compose.yaml: a server with access control, three echo agents, the
    ledger, the deployer, with credentials generated into ``tmp_path``; the sites variant: a hub,
    two leaf-node sites and their agents); down again (volumes too) on exit."""
    if not _docker_requested():
        pytest.skip("container tests are opt-in: set ANTS_TEST_DOCKER=1 where a container engine runs")
    containers_script("--status")
    engine = containers_script("--engine")
    reason = _docker_reachable()
    if reason:
        pytest.skip(reason)
    server_image, reason = nats_image()
    if server_image is None:
        pytest.skip(reason)
    port, monitor_port = free_port(), free_port()
    env = {
        **os.environ,
        "ANTS_NATS_PORT": str(port),
        "ANTS_NATS_MONITOR_PORT": str(monitor_port),
        "ANTS_NATS_SERVER_IMAGE": server_image,
    }
    seed = None
    if file == "compose.yaml":
        auth = tmp_path / "auth"
        roles = config_roles([*service_users(), CLIENT])
        args = ["config", "--out", str(auth), *roles, "--observer", "watcher"]
        assert (await asyncio.to_thread(run_cli, *args)).returncode == 0
        env["ANTS_AUTH_DIR"] = str(auth)
        seed = read_seed(auth / f"{CLIENT}.seed")
    program = compose_program(engine)
    project = f"ants-nats-test-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        compose=[*program, "-f", str(ROOT / file), "-p", project],
        engine=engine,
        project=project,
        env=env,
        url=f"nats://127.0.0.1:{port}",
        monitor=f"http://127.0.0.1:{monitor_port}",
        seed=seed,
    )
    try:
        # --no-build: the images are scripts/containers' (here nothing could be pulled to build).
        await stack.compose_run("up", "-d", "--no-build")
        await stack.until_serving()
        yield stack
    finally:
        await stack.compose_run("down", "--volumes", "--timeout", "10")


async def prompt_through_gateway(board: TaskBoard, text: str) -> JsonValue:
    """Prompt the gateway's llm route with the official caller SDK; the response, as JSON."""
    agents = Agents(nc=board.nc)
    heartbeats = await board.nc.subscribe("agents.hb.ants-nats.ants.llm")
    try:
        found = await agents.discover(filter=DiscoverFilter(session_name="llm"))
        if not found:  # the gateway is still starting: it heartbeats once it serves
            await heartbeats.next_msg(timeout=60)
            found = await agents.discover(filter=DiscoverFilter(session_name="llm"))
    finally:
        await heartbeats.unsubscribe()
    (gateway,) = found
    async with aclosing(gateway.prompt(text, timeout=60)) as stream:
        replies = [message async for message in stream]
    answer: JsonValue = json.loads("".join(m.text for m in replies if isinstance(m, ResponseChunk)))
    return answer


async def deployment_of(board: TaskBoard, key: str) -> TrailEvent:
    """The deployer's answer (``artifact.deployed`` or ``artifact.deploy_failed``) to artifact ``key``."""
    async for event in board.trail.follow("ants.trail.mark.artifact.>"):
        if event.ref == key and event.kind != "mark.artifact.written":
            return event
    raise AssertionError("the trail's follow ended")


@pytest.mark.docker
async def test_the_stack_runs_tasks_from_this_host_records_them_and_leaves_nothing(tmp_path: Path) -> None:
    async with compose_stack(tmp_path) as stack:
        # The filters find this project's things (so the empty lists after `down` mean something).
        assert len(await stack.listed("container", running=True)) == len(compose()["services"])
        assert len(await stack.listed("volume")) == 2  # nats-data and public
        assert len(await stack.listed("network")) == 1
        async with TaskBoard.connect(stack.url, seed=stack.seed, name="compose-test") as board:
            # A pipeline across the three containerised agents, each the only one with its capability.
            work = [
                Task(id="f1", kind="fetch", requires=("net",), payload={"url": "u"}),
                Task(id="p1", kind="parse", requires=("parse",), depends_on=("f1",), payload="p"),
                Task(id="s1", kind="summarise", requires=("llm",), depends_on=("p1",), payload="s"),
            ]
            for task in work:
                await board.submit(task)
            final = await board.wait([t.id for t in work], timeout=60)
            done_by = {tid: (r.status, r.attempts[-1].agent, r.result) for tid, r in final.items()}
            assert done_by == {
                "f1": (TaskStatus.DONE, "fetcher", {"url": "u"}),
                "p1": (TaskStatus.DONE, "parser", "p"),
                "s1": (TaskStatus.DONE, "summariser", "s"),
            }
            # The ledger service counts each completion for its agent, as it follows the trail.
            completed: dict[str, int] = {}
            async with asyncio.timeout(30), aclosing(Ledger(board.nc).watch()) as changes:
                async for agent, ledger in changes:
                    completed[agent] = ledger.totals.completed if ledger else 0
                    if completed == {"fetcher": 1, "parser": 1, "summariser": 1}:
                        break
            # A caller speaking the Synadia Agent Protocol reaches the swarm through the gateway.
            answer = await prompt_through_gateway(board, "summarise this")
            assert isinstance(answer, dict) and answer["prompt"] == "summarise this"  # echoed back
            # The deployer publishes an artifact written from this host into its volume.
            ref = await board.artifacts.put("report.txt", b"all done")
            data: JsonValue = {"artifact": ref.model_dump(mode="json")}
            await board.trail.mark("artifact.written", key="report", data=data, agent=CLIENT)
            outcome = await asyncio.wait_for(deployment_of(board, "report"), 30)
            assert outcome.kind == "mark.artifact.deployed", outcome
            published = await stack.compose_run("exec", "-T", "deployer", "cat", "/public/report.txt")
            assert published == "all done"
    # `down` leaves nothing of the project: no container, running or not, no volume, no network.
    assert await stack.listed("container") == []
    assert await stack.listed("volume") == []
    assert await stack.listed("network") == []


def test_the_sites_agents_connect_to_their_site_and_name_the_hubs_domain() -> None:
    services = compose(SITES)["services"]
    hub_conf = (ROOT / "deploy/sites/hub.conf").read_text()
    site_conf = (ROOT / "deploy/sites/site.conf").read_text()
    assert "domain: hub" in hub_conf and re.search(r"leafnodes \{\s*port: 7422", hub_conf)
    assert 'url: "nats-leaf://hub:7422"' in site_conf and "jetstream" not in site_conf
    for site in ("site-a", "site-b"):
        assert services[site]["volumes"] == ["./deploy/sites/site.conf:/etc/nats/site.conf:ro"]
    assert "./deploy/sites/hub.conf:/etc/nats/hub.conf:ro" in services["hub"]["volumes"]
    at = {name: s["environment"] for name, s in services.items() if name not in servers(SITES)}
    assert at["fetcher"] == {"ANTS_NATS_URL": "nats://site-a:4222", "ANTS_NATS_JS_DOMAIN": "hub"}
    assert at["parser"] == {"ANTS_NATS_URL": "nats://site-b:4222", "ANTS_NATS_JS_DOMAIN": "hub"}
    assert at["ledger"] == {"ANTS_NATS_URL": "nats://hub:4222"}  # beside the board: no domain to name


@pytest.mark.docker
async def test_the_two_site_stack_runs_a_dag_across_its_sites(tmp_path: Path) -> None:
    async with compose_stack(tmp_path, SITES) as stack:
        assert len(await stack.listed("container", running=True)) == len(compose(SITES)["services"])
        async with TaskBoard.connect(stack.url, name="compose-sites-test") as board:
            work = [
                Task(id="f1", kind="fetch", requires=("net",), payload={"url": "u"}),
                Task(id="p1", kind="parse", requires=("parse",), depends_on=("f1",), payload="p"),
            ]
            await board.submit_many(work)
            final = await board.wait([t.id for t in work], timeout=60)
            assert {tid: r.status for tid, r in final.items()} == {
                "f1": TaskStatus.DONE,
                "p1": TaskStatus.DONE,
            }
            # Each step was done at its own site, by the agent there.
            assert final["f1"].attempts[-1].agent.startswith("fetcher")
            assert final["p1"].attempts[-1].agent.startswith("parser")
            async with aiohttp.ClientSession() as http, http.get(f"{stack.monitor}/leafz") as response:
                assert len((await response.json())["leafs"]) == 2  # both sites linked to the hub
    assert await stack.listed("container") == []
