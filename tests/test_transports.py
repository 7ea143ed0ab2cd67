"""The check for connections left open at a test's end finds them, and closes them quietly."""

from __future__ import annotations

import asyncio
import gc
import warnings

from transports import left_open, shut


def test_a_connection_left_open_when_its_loop_closed_is_found_and_closed() -> None:
    async def leave_open() -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await asyncio.open_connection("127.0.0.1", port)  # neither end is ever closed
        await asyncio.sleep(0.05)  # the server side's connection made
        server.close()
        return server

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(leave_open())
    finally:
        loop.close()

    found = left_open()
    assert len(found) == 2, [f.what for f in found]  # the client's end and the server's
    assert any("leave_open.<locals>.handle" in f.what for f in found)  # the server named
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for left in found:
            shut(left)
        del found, left
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert left_open() == []
