"""A TCP proxy in front of a real server that cuts chosen connections at a chosen moment.

The loss of a connection at a precise point of a protocol (before the server's greeting,
while the client's LOGIN is under way, in the middle of the TLS handshake) cannot be
provoked reliably on the server itself. Between the bot and the real server, though, it is a
seam we own: the proxy forwards bytes both ways untouched, and cuts the first ``times``
connections (a reset on both sides) at the moment ``cut`` names; the later ones pass, so the
client can be seen to recover.

- ``"greeting"``: as soon as the client has connected, before the server's first byte
  reaches it (a server restarted just then, a flow dropped by a NAT).
- ``"capability"``: when the client's first IMAP CAPABILITY line comes through (aioimaplib
  asks right after the greeting); ``"login"``: when its LOGIN line does (neither is passed
  on).
- ``"tls"``: when the client's first bytes come through (its TLS ClientHello; not passed on).

With ``stall``, such a connection is not cut but goes silent at that moment: the proxy
passes nothing more on from the client and keeps both ends open (a server that hangs, a
flow that a firewall drops without a word).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Literal

Cut = Literal["greeting", "capability", "login", "tls"]


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to the server at ``host:target``; see the module."""

    def __init__(
        self, target: int, cut: Cut, times: int, stall: bool = False, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.target = target
        self.cut = cut
        self.times = times
        self.stall = stall
        self.port = 0  # known once started
        self.connections = 0  # accepted so far
        self.cuts = 0  # of which cut (or stalled)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _cut(self, reader: asyncio.StreamReader, *writers: asyncio.StreamWriter) -> None:
        """Reset both ends, as a peer that is gone does; or, with ``stall``, pass on nothing
        more of what the client sends, until it goes."""
        self.cuts += 1
        if self.stall:
            while await reader.read(65536):
                pass
        for writer in writers:
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        cutting = self.cuts < self.times
        try:
            if cutting and self.cut == "greeting":
                await self._cut(reader, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target)
            self._writers.add(up_writer)
            try:
                down = asyncio.create_task(self._pipe(up_reader, writer))
                await self._upstream(reader, up_writer, writer, cutting)
                await down
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side gone: the other one is closed below
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
        cutting: bool,
    ) -> None:
        """The client's bytes to the server, cut where told (line by line, for a command)."""
        by_line = cutting and self.cut in ("capability", "login")
        command = re.compile(rb"^\S+ %s\b" % self.cut.encode(), re.IGNORECASE)
        while True:
            data = await (reader.readline() if by_line else reader.read(65536))
            if not data:
                up_writer.write_eof()
                return
            if cutting and (self.cut == "tls" or (by_line and command.match(data))):
                await self._cut(reader, writer, up_writer)
                return
            up_writer.write(data)
            await up_writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if not writer.transport.is_closing():
                writer.write_eof()


@contextlib.asynccontextmanager
async def fault_proxy(
    target: int, cut: Cut, times: int, stall: bool = False
) -> AsyncIterator[FaultProxy]:
    """A started :class:`FaultProxy`, closed (with every connection through it) at the end."""
    proxy = FaultProxy(target, cut, times, stall)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
