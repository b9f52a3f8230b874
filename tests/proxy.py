"""A TCP link between two servers that a test can cut, heal and slow down: a leaf node's link to
its hub, a cluster route. Everything stays on loopback; no root, no firewall rules."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

from ants_nats.server import free_port

_CHUNK = 65536


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
