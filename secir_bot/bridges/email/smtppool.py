"""SMTP sessions kept open between outbox rows (issue 11).

A post to a large list is several outbox rows (one per recipient group), delivered one
after another; opening a session for each (TCP, TLS, EHLO, AUTH: several round trips to a
distant server) is what this saves. A session whose delivery went well is kept, at most
``keep`` of them, and closed (QUIT) when it has been idle for ``idle`` seconds; ``keep = 0``
(or ``idle = 0``) closes every session after its delivery, as before.

A kept session is checked before it is used again: one that the server has closed (a
restart, its own idle timeout, a 421) is dropped, and so is one that does not answer
``RSET`` with 250, which also clears anything a previous transaction may have left. Then a
new session is opened. A session that fails during a delivery is never kept (the caller
closes it, ``discard``); the row is retried as any failed delivery is. Nothing is sent on a
session before it has passed the check, and a transaction on it either ends with the
server's 250 for the data (recorded by the caller) or fails as on a new session: keeping
sessions changes no row's outcome, only the connections it costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiosmtplib

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[aiosmtplib.SMTP]]
QUIT_TIMEOUT = 5.0  # seconds a QUIT may take; the socket is closed in any case


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        if smtp.is_connected:
            await smtp.quit(timeout=QUIT_TIMEOUT)
    smtp.close()


class SessionPool:
    """Logged-in SMTP sessions for the deliveries, reused while they are fresh."""

    def __init__(self, open_session: Opener, *, keep: int = 0, idle: float = 0.0) -> None:
        self.open_session = open_session
        self.keep = keep if idle > 0 else 0
        self.idle = idle
        self.opened = 0  # sessions opened, for the benchmark and the tests
        self.reused = 0  # sessions taken from the pool
        self._idle: list[tuple[aiosmtplib.SMTP, asyncio.TimerHandle]] = []
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self) -> aiosmtplib.SMTP:
        """A kept session that still answers, else a new one (``open_session``'s errors
        propagate as they are)."""
        while self._idle:
            smtp, timer = self._idle.pop()
            timer.cancel()
            if await self._usable(smtp):
                self.reused += 1
                return smtp
        smtp = await self.open_session()
        self.opened += 1
        return smtp

    async def _usable(self, smtp: aiosmtplib.SMTP) -> bool:
        if not smtp.is_connected:
            log.debug("a kept SMTP session was closed by the server; opening another")
            smtp.close()
            return False
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.info("a kept SMTP session is no longer usable (%s); opening another", exc)
            smtp.close()
            return False
        return True

    async def release(self, smtp: aiosmtplib.SMTP) -> None:
        """Give back a session whose delivery went well: kept if there is room, else quit."""
        if not smtp.is_connected or len(self._idle) >= self.keep:
            await _quit(smtp)
            return
        timer = asyncio.get_running_loop().call_later(self.idle, self._expire, smtp)
        self._idle.append((smtp, timer))

    @staticmethod
    async def discard(smtp: aiosmtplib.SMTP) -> None:
        """End a session that failed: never used again (a QUIT if it is still connected)."""
        await _quit(smtp)

    def _expire(self, smtp: aiosmtplib.SMTP) -> None:
        for i, (kept, _) in enumerate(self._idle):
            if kept is smtp:
                del self._idle[i]
                task = asyncio.get_running_loop().create_task(_quit(smtp))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                return

    async def close(self) -> None:
        """Quit every kept session (at shutdown)."""
        idle, self._idle = self._idle, []
        for _, timer in idle:
            timer.cancel()
        await asyncio.gather(*(_quit(smtp) for smtp, _ in idle), *self._closing)
