"""The embedded server helper, connection errors, and the optional container path."""

from __future__ import annotations

import pytest

from ants_nats import EmbeddedServer, ServerStartError, ServerUnavailable, TaskBoard, connect
from ants_nats.server import free_port


async def test_embedded_server_starts_with_jetstream_and_stops() -> None:
    async with EmbeddedServer() as server:
        assert server.running
        async with connect(server.url) as nc:
            info = await nc.jetstream().account_info()
            assert info.streams == 0
    assert not server.running


async def test_unreachable_server_is_a_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnavailable, match=r"cannot connect to NATS at nats://127\.0\.0\.1:\d+"):
        async with TaskBoard.connect(url):
            pass


async def test_bad_server_arguments_fail_with_the_servers_reason() -> None:
    with pytest.raises(ServerStartError, match="nats-server exited"):
        async with EmbeddedServer(extra_args=["--no-such-flag"]):
            pass


async def test_missing_binary_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTS_NATS_SERVER_BIN", "/nonexistent/nats-server")
    monkeypatch.setattr("ants_nats.server.sys.executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerStartError, match="nats-server-bin"):
        async with EmbeddedServer():
            pass


async def test_board_on_a_containerised_server(docker_nats: str) -> None:
    async with TaskBoard.connect(docker_nats) as board:
        record = await board.submit({"id": "t", "kind": "work"})
        assert record.ready
