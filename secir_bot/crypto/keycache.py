"""Which member keys can be encrypted to, remembered until the keyring changes.

Every post asks which members' keys are usable; listing 1000 keys with gpg and reading the
listing took ~0.35 s of each fan-out (docs/performance.md). The answer only changes when
the keyring does, or when a key reaches its expiry. So one full listing is kept, with the
moment until which each key is usable, and it is read again only when

- this process changed the keyring through :class:`~secir_bot.crypto.Keyring` (import,
  key generation): the keyring calls :meth:`KeyCache.invalidate`;
- another process changed it (an admin's ``secir-bot member add`` while the bot runs): the
  keyring files' identity, size and modification time differ from those seen before the
  listing was made.

Expiry is compared with the clock at each question, never cached as a yes or no.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from secir_bot.crypto.keys import encryption_windows

# The files gpg keeps public keys in: the keybox (gpg 2.1 and later) and the legacy keyring.
# Both are replaced by a rename when gpg writes them, so their inode changes too. The trust
# database is left out on purpose: gpg rewrites it on plain listings.
KEYRING_FILES = ("pubring.kbx", "pubring.gpg")

Stamp = tuple[tuple[str, int, int, int] | tuple[str], ...]


def keyring_stamp(home: Path) -> Stamp:
    """What identifies the current content of the keyring files in ``home``."""
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for name in KEYRING_FILES:
        try:
            st = os.stat(home / name)
        except FileNotFoundError:
            out.append((name,))
            continue
        out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class KeyCache:
    """One listing of the whole keyring, kept while the keyring files stay the same.

    ``list_all`` runs the listing (one gpg call) and returns its colon output; ``clock``
    gives the current Unix time (tests move it forward to see a key expire).
    """

    def __init__(
        self,
        home: Path,
        list_all: Callable[[], Awaitable[bytes]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self._list_all = list_all
        self._clock = clock
        self._stamp: Stamp | None = None
        self._until: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.listings = 0  # how many times the keyring was listed (tests and benchmarks)

    def invalidate(self) -> None:
        """Forget the listing (the keyring was changed through this process)."""
        self._stamp = None

    async def _fresh(self) -> dict[str, float]:
        async with self._lock:  # concurrent posts share one listing
            stamp = keyring_stamp(self.home)
            if self._stamp != stamp:
                # The stamp is taken before listing: a change while gpg lists makes the
                # next question list again rather than keep a stale answer.
                self._until = encryption_windows(await self._list_all())
                self._stamp = stamp
                self.listings += 1
            return self._until

    async def usable(self, fingerprints: Iterable[str]) -> set[str]:
        """Those of ``fingerprints`` in the keyring that can be encrypted to right now."""
        until = await self._fresh()
        now = self._clock()
        return {fpr for fpr in (f.upper() for f in fingerprints) if until.get(fpr, 0.0) > now}

    async def expiry(self, fingerprint: str) -> float | None:
        """Until when the key can be encrypted to (``inf``: no expiry; None: not at all)."""
        return (await self._fresh()).get(fingerprint.upper())
