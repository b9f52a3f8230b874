"""The embedded server helper, connection errors, and the optional container path."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

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


async def test_a_reused_store_reports_this_starts_failure_not_an_earlier_ones(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ServerStartError, match="address already in use"):
            async with EmbeddedServer(store_dir=tmp_path, port=taken.getsockname()[1]):
                pass
    with pytest.raises(ServerStartError) as failed:
        async with EmbeddedServer(store_dir=tmp_path, extra_args=["--no-such-flag"]):
            pass
    assert "address already in use" not in str(failed.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
async def test_a_program_killed_takes_its_embedded_server_with_it() -> None:
    program = (
        "import asyncio\n"
        "from ants_nats import EmbeddedServer\n"
        "async def main():\n"
        "    async with EmbeddedServer() as server:\n"
        "        print(server._proc.pid, flush=True)\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", program, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(await asyncio.wait_for(parent.stdout.readline(), 30))
    ended = asyncio.Event()
    pidfd = os.pidfd_open(child)  # readable once the server's process has ended
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, ended.set)
    try:
        parent.kill()  # no clean-up runs in it
        await parent.wait()
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


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


def test_a_server_started_from_a_thread_outlives_that_thread() -> None:
    # (The parent-death signal would follow the thread that started it: none is asked for there.)
    started: list[EmbeddedServer] = []

    async def start() -> None:
        server = EmbeddedServer()
        await server.start()
        started.append(server)

    worker = threading.Thread(target=asyncio.run, args=(start(),))
    worker.start()
    worker.join()
    [server] = started
    try:
        assert server._proc is not None and server._proc.returncode is None
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            assert conn.recv(4096).startswith(b"INFO ")  # still serving after its thread ended
    finally:
        assert server._proc is not None
        os.kill(server._proc.pid, signal.SIGTERM)


async def test_a_board_used_after_its_async_with_says_its_connection_is_closed() -> None:
    async with EmbeddedServer() as server:
        async with TaskBoard.connect(server.url) as board:
            pass
        with pytest.raises(ServerUnavailable, match="the connection to NATS is closed"):
            await board.get("anything")
