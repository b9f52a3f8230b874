"""Networks on loopback for tests and benches: a TCP ``Link`` between two servers that can be cut,
healed and slowed down, and a hub with two leaf-node sites, one of them behind a ``Link``. No root,
no firewall rules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from ants_nats import EmbeddedServer
from ants_nats.server import free_port, monitor_json

HUB = "hub"
"""The hub's JetStream domain: where the board's streams live."""
LINK_TIMEOUT_S = 15.0

_CHUNK = 65536
_NOWHERE = "127.0.0.1:1"
"""A route address nobody listens on (what cluster members gossip about themselves)."""


class Link:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``, with ``delay`` seconds added each way.

    ``cut()`` drops every connection and refuses new ones (both ends see the link go, as with a
    broken network path); ``heal()`` lets connections through again.
    """

    def __init__(self, target: int, *, delay: float = 0.0) -> None:
        self.target = target
        self.port = free_port()
        self.delay = delay
        self.cut_off = False
        self.connections = 0
        """Connections made through the link so far."""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        self._drop()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection through the link and refuse new ones until ``heal()``."""
        self.cut_off = True
        self._drop()

    def heal(self) -> None:
        """Let connections through again (the servers reconnect by themselves)."""
        self.cut_off = False

    def _drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk held back ``delay`` seconds (in order, not one after
        another: a slow link has latency, not less bandwidth)."""
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await due.get()
                if not data:
                    break
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the simulated latency itself
                sink.write(data)
                await sink.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await source.read(_CHUNK):
                due.put_nowait((time.monotonic() + self.delay, data))
            due.put_nowait((0.0, b""))
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender
            sink.transport.abort()


@asynccontextmanager
async def hub_and_sites(
    tmp_path: Path, *, delay: float = 0.0
) -> AsyncIterator[tuple[EmbeddedServer, EmbeddedServer, EmbeddedServer, Link]]:
    """The hub and two sites, once both sites' leaf links are up; site A's link to the hub goes
    through a ``Link`` (with ``delay`` seconds each way) that the test may cut."""
    hub_leaf_port = free_port()
    hub_conf = tmp_path / "hub.conf"
    # no_advertise: a site reconnects through its link only, never straight to the address the
    # hub would otherwise tell it (which would bypass a cut link).
    hub_conf.write_text(
        f"jetstream {{ domain: {HUB} }}\n"
        f"leafnodes {{ listen: 127.0.0.1:{hub_leaf_port}, no_advertise: true }}\n"
    )
    link = Link(hub_leaf_port, delay=delay)
    confs = []
    for site, port in (("site_a", link.port), ("site_b", hub_leaf_port)):
        conf = tmp_path / f"{site}.conf"
        remote = f'leafnodes {{ reconnect: 1, remotes: [ {{ url: "nats-leaf://127.0.0.1:{port}" }} ] }}\n'
        conf.write_text(f"jetstream {{ domain: {site} }}\n{remote}")
        confs.append(conf)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(link)
        hub = await stack.enter_async_context(EmbeddedServer(name=HUB, extra_args=["-c", str(hub_conf)]))
        sites = [
            # Each server its own name: a hub takes one leaf link per server name.
            await stack.enter_async_context(EmbeddedServer(name=conf.stem, extra_args=["-c", str(conf)]))
            for conf in confs
        ]
        await leafs_linked(hub, len(sites))
        yield hub, sites[0], sites[1], link


async def leafs_linked(hub: EmbeddedServer, count: int) -> None:
    """Until ``count`` leaf links are up at the hub."""
    async with asyncio.timeout(LINK_TIMEOUT_S):
        # The monitoring endpoint is all there is to ask: nothing announces a leaf link.
        while len((await monitor_json(hub.monitor_port, "/leafz")).get("leafs") or []) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


class PartitionedCluster:
    """A JetStream cluster of ``size`` servers whose routes all run through ``Link``s, so a test
    can isolate a member (cut every link to and from it) and heal it."""

    def __init__(self, tmp_path: Path, size: int = 3, name: str = "ants") -> None:
        self.size = size
        route_ports = [free_port() for _ in range(size)]
        # One link per ordered pair: server i reaches server j's route port through links[i, j].
        self.links = {(i, j): Link(route_ports[j]) for i in range(size) for j in range(size) if i != j}
        self.servers: list[EmbeddedServer] = []
        for i in range(size):
            conf = tmp_path / f"n{i}.conf"
            routes = ", ".join(
                f'"nats-route://127.0.0.1:{self.links[i, j].port}"' for j in range(size) if j != i
            )
            # Members reach each other through the links only: no_advertise keeps client URLs
            # to themselves, and the route address each one gossips (which peers would dial
            # straight, bypassing a cut) is one where nothing listens.
            conf.write_text(
                f"cluster {{ name: {name}, listen: 127.0.0.1:{route_ports[i]}, no_advertise: true,"
                f" advertise: {_NOWHERE}, routes: [{routes}] }}\n"
            )
            self.servers.append(
                EmbeddedServer(
                    store_dir=tmp_path / f"n{i}", name=f"{name}-n{i}", extra_args=["-c", str(conf)]
                )
            )
        self._stack = AsyncExitStack()

    @property
    def urls(self) -> list[str]:
        """Client URLs of every member."""
        return [server.url for server in self.servers]

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            for link in self.links.values():
                await stack.enter_async_context(link)
            # Members start together: JetStream needs a quorum before any of them is healthy.
            await asyncio.gather(*(server.start() for server in self.servers))
            for server in self.servers:
                stack.push_async_callback(server.stop)
            await self.until_leaders()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def isolate(self, member: int) -> None:
        """Cut every route to and from ``member``."""
        for (i, j), link in self.links.items():
            if member in (i, j):
                link.cut()

    def heal(self) -> None:
        """Let every route through again."""
        for link in self.links.values():
            link.heal()

    async def until_leaders(self, timeout: float = 30.0) -> str:
        """Until every member knows the same JetStream meta leader; its name."""
        async with asyncio.timeout(timeout):
            while True:
                leaders = set()
                for server in self.servers:
                    jsz = await monitor_json(server.monitor_port, "/jsz")
                    leaders.add((jsz.get("meta_cluster") or {}).get("leader"))
                if len(leaders) == 1 and None not in leaders:
                    return str(leaders.pop())
                await asyncio.sleep(0.05)  # the monitoring endpoint is all there is to ask
