"""A TCP proxy in front of a real server that cuts chosen connections at a chosen moment.

The loss of a connection at a precise point of a protocol (before the server's greeting,
while the client's LOGIN is under way, in the middle of the TLS handshake) cannot be
provoked reliably on the server itself. Between the bot and the real server, though, it is a
seam we own: the proxy forwards bytes both ways untouched, and cuts the first ``times``
connections (a reset on both sides) at the moment its :class:`Cut` names; the later ones
pass, so the client can be seen to recover.

With ``stall``, such a connection is not cut but goes silent at that moment: the proxy
passes nothing more on in that direction and keeps both ends open (a server that hangs, a
flow that a firewall drops without a word).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Cut:
    """Where a connection is cut: as soon as the client has connected (``"connect"``), at
    the client's first bytes or its first line matching ``line`` (``"client"``), or at the
    server's first line matching ``line`` (``"server"``). The bytes that trigger the cut
    are not passed on."""

    at: Literal["connect", "client", "server"]
    line: bytes | None = None  # a regular expression; None: the first bytes, whatever they are


GREETING = Cut("connect")  # before the server's greeting (a restart, a NAT dropping the flow)
TLS_HELLO = Cut("client")  # in the TLS handshake: the client's ClientHello
IMAP_CAPABILITY = Cut("client", rb"^\S+ CAPABILITY\b")  # aioimaplib's, after the greeting
IMAP_LOGIN = Cut("client", rb"^\S+ LOGIN ")
IMAP_CREATE = Cut("client", rb"^\S+ CREATE ")  # the bot's folders, after the login


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
        more of what ``reader`` (the side that made the cut happen) sends, until it ends."""
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
        cut = self.cut if self.cuts < self.times else None
        try:
            if cut is not None and cut.at == "connect":
                await self._cut(reader, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target)
            self._writers.add(up_writer)
            up_cut = cut if cut is not None and cut.at == "client" else None
            down_cut = cut if cut is not None and cut.at == "server" else None
            try:
                down = asyncio.create_task(
                    self._pipe(up_reader, writer, down_cut, writer, up_writer)
                )
                await self._pipe(reader, up_writer, up_cut, writer, up_writer)
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

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        cut: Cut | None,
        *ends: asyncio.StreamWriter,
    ) -> None:
        """``source``'s bytes to ``sink`` (line by line while a line is to be cut at)."""
        pattern = re.compile(cut.line, re.IGNORECASE) if cut and cut.line is not None else None
        with contextlib.suppress(OSError):
            while data := await (source.readline() if pattern else source.read(65536)):
                if cut is not None and (pattern is None or pattern.match(data)):
                    await self._cut(source, *ends)
                    return
                sink.write(data)
                await sink.drain()
            if not sink.transport.is_closing():
                sink.write_eof()


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
