"""compose.yaml cannot run here (no Docker engine), so validate it against the code instead."""

from __future__ import annotations

import asyncio
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from ants_nats import AgentCard, EmbeddedServer, TaskBoard, read_seed
from ants_nats.cli import main as cli

ROOT = Path(__file__).parents[1]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_every_service_runs_an_installed_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    installed = {ep.name: ep for ep in entry_points(group="console_scripts")}
    services = compose()["services"]
    assert services["nats"]["image"].startswith("nats:")
    for name, service in services.items():
        if name == "nats":
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
    # The ledger service is the only writer of the ledger: it has a role of its own.
    roles = {user: "--ledger" if user == "ledger" else "--agent" for user in users.values()}
    args = ["config", "--out", str(tmp_path)] + [a for user, role in roles.items() for a in (role, user)]
    assert await asyncio.to_thread(cli, args) == 0  # what the compose.yaml header tells users to run
    async with EmbeddedServer(extra_args=["-c", str(tmp_path / "nats-server.conf")]) as server:
        for user in users.values():
            seed = read_seed(tmp_path / f"{user}.seed")
            async with TaskBoard.connect(server.url, seed=seed) as board:
                # Each service may announce itself under its own name: the config admits it.
                card = AgentCard(id=user, name=user, load=0, capacity=1, software="compose-test")
                await board.directory.announce(card)
