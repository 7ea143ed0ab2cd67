"""Connections a test left open when its event loop closed: found at the test's end.

Each test runs on an event loop of its own, closed after the test. A socket transport still
open then (a connection accepted by a test's server just as the test ended, a client that
was never closed) can no longer be closed by anything; the garbage collector closes it
whenever it next runs, with a ResourceWarning that lands in whichever test runs then. A full
run saw that happen in a unit test that opened no such connection, and runs with a
collection after every test never saw it: it needs timing that those runs did not meet.

``left_open`` finds such transports right after each test (``conftest.py``), so that the
test that left one is named, and ``shut`` closes it there, before any collection can.
"""

from __future__ import annotations

import gc
from asyncio import selector_events
from dataclasses import dataclass
from typing import Any

# asyncio's socket transports (plain, and under TLS), by their private base class.
SOCKET_TRANSPORT: type = getattr(selector_events, "_SelectorTransport")  # noqa: B009


@dataclass(frozen=True)
class Left:
    """A transport left open on a closed loop, in words: its protocol and its ends."""

    transport: Any  # an asyncio socket transport
    what: str


def _ends(transport: Any) -> str:
    sock = transport._sock
    try:
        return f"{sock.getsockname()} -> {sock.getpeername()}"
    except OSError:
        return "(not connected)"


def left_open() -> list[Left]:
    """Every socket transport still open on a closed event loop (one that ``shut`` closed
    is not); transports of loops that still run are none of this check's concern."""
    found = []
    for obj in gc.get_objects():
        if not isinstance(obj, SOCKET_TRANSPORT):
            continue
        transport: Any = obj
        if transport._sock is None or not transport._loop.is_closed():
            continue
        protocol = type(transport._protocol)
        handler = getattr(transport._protocol, "_client_connected_cb", None)
        named = f" (handler {handler.__module__}.{handler.__qualname__})" if handler else ""
        what = f"{protocol.__module__}.{protocol.__qualname__}{named}, {_ends(transport)}"
        found.append(Left(transport, what))
    return found


def shut(left: Left) -> None:
    """Close a left transport's socket as its finaliser would, without the warning: its
    loop is closed, so ``transport.close()`` cannot run its callbacks any more."""
    left.transport._sock.close()
    left.transport._sock = None
