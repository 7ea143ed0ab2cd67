"""Listening in the sandbox: servers whose stop ends every connection, even one being made.

asyncio makes a connection a few turns of the event loop after it took it from the kernel
(its accept callback, a task, the transport's ``connection_made``). On Python 3.11 a
connection whose making reaches its server after the server was closed fails half made: its
socket stays open until the garbage collector finds it, with a ResourceWarning in whatever
runs then (a test of its own, in the test suite). A client that connects just as a sandbox
server stops (the bot reconnecting while the demo ends) meets exactly that moment.

:class:`Listeners` keeps a service's servers and every connection they made from the moment
it is made. Its :meth:`~Listeners.close` stops taking connections, lets the turns pass in
which those under way are made (each ended as it is made), closes the servers, and ends
every connection still open.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

# Turns of the event loop from a connection taken to its connection_made (asyncio's accept
# callback, its task, the transport's connection_made, its end), with one to spare.
ACCEPT_TURNS = 5

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listeners:
    """The servers of one sandbox service, and the connections they made and still have."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.closing = False

    def made(self, transport: asyncio.BaseTransport) -> None:
        """For a protocol's ``connection_made``: known from now on, ended at once after
        :meth:`close` began."""
        if self.closing:
            transport.close()
            return
        self._transports.add(transport)

    async def listen(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> asyncio.Server:
        """A server on ``host:port`` (0: a free one) whose protocols call :meth:`made`."""
        server = await asyncio.get_running_loop().create_server(factory, host, port)
        self.servers.append(server)
        return server

    async def listen_streams(self, handler: StreamHandler, host: str, port: int) -> asyncio.Server:
        """``asyncio.start_server``'s reader and writer for ``handler``, tracked."""
        return await self.listen(lambda: _TrackedStreams(self, handler), host, port)

    async def close(self) -> None:
        """Stop taking connections, end those being made and those open; idempotent."""
        self.closing = True
        servers, self.servers = self.servers, []
        loop = asyncio.get_running_loop()
        for server in servers:
            for listening in server.sockets:
                loop.remove_reader(listening.fileno())
        for _ in range(ACCEPT_TURNS):
            await asyncio.sleep(0)
        for server in servers:
            server.close()
        for transport in list(self._transports):
            transport.close()
        for server in servers:
            await server.wait_closed()


class _TrackedStreams(asyncio.StreamReaderProtocol):
    """``asyncio.start_server``'s protocol, known to its listeners from the moment its
    connection is made (before the handler's task has begun)."""

    def __init__(self, listeners: Listeners, handler: StreamHandler) -> None:
        super().__init__(asyncio.StreamReader(), handler)
        self._listeners = listeners

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._listeners.made(transport)
