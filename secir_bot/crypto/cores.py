"""The machine's cores shared by gpg: work for the room first, list-mail encryption after.

In a burst of member mail, two kinds of gpg work compete for the same cores: decrypting and
checking each incoming mail (the room leg: a mail reaches the room only after it) and
signing and encrypting the list copies of the posts already in the room (the mail leg).
The room leg goes first: a decryption or signature check starts at once (the inbox
runner's ``imap.parallel_decisions`` already bounds how many run), and counts as a busy
core; a list-mail encryption starts only while fewer gpg runs than there are cores are
going, and waits, first come first served, when they are all taken. So list copies are made
on the cores the room leg leaves idle, and catch up when the burst's decisions are done
(``listmail`` bounds how far they may fall behind).

This orders who *starts*; a gpg run that has started is never interrupted, and the
operating system still shares the cores among the runs it has.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator


def core_count() -> int:
    """The cores gpg may keep busy: all of the machine's."""
    return max(1, os.cpu_count() or 1)


class Cores:
    """Counts the gpg runs going; ``first`` never waits, ``spare`` waits for a free core."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count or core_count()
        self.busy = 0  # gpg runs going (of either kind)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def first(self) -> AsyncIterator[None]:
        """A gpg run for the room leg (decrypt, verify): starts at once, counted."""
        self.busy += 1
        try:
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def spare(self) -> AsyncIterator[None]:
        """A gpg run for the mail leg (sign and encrypt): starts on a free core only."""
        if self.busy < self.count and not self._waiting:
            self.busy += 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(granted)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.cancelled():
                    with contextlib.suppress(ValueError):  # unless _release dropped it
                        self._waiting.remove(granted)
                else:  # the core was handed over just as this waiter was cancelled
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.busy -= 1
        while self._waiting and self.busy < self.count:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled waiter is passed over
                self.busy += 1  # handed to it, counted from now
                waiter.set_result(None)
