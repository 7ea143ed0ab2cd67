"""The seam where list mail is signed and encrypted: gpg (the default and the reference),
or Sequoia (``crypto.backend = "sequoia"``, optional; see ``crypto.sequoia``).

Everything else that touches keys (listing, importing, decrypting and verifying what
members send) stays with gpg through :class:`~secir_bot.crypto.Keyring`; only the hot path
of the fan-out, one signature and one encryption per recipient group, can be switched.
Each backend bounds how many encryptions run at once (one per core by default), so that
concurrent posts and the groups of one post share the machine rather than crowd it, and
starts one only on a core that the decrypting of incoming mail leaves free (``cores``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Protocol

from secir_bot.crypto.keyring import Keyring

BACKENDS = ("gpg", "sequoia")


def default_parallel() -> int:
    """One encryption per core: gpg and Sequoia each keep one core busy."""
    return max(1, os.cpu_count() or 1)


class SignEncrypt(Protocol):
    """Signs ``data`` with ``signer`` and encrypts it to ``recipients`` (fingerprints)."""

    name: str
    hides_recipients: bool

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        """ASCII-armoured OpenPGP message; raises ``CryptoError`` when it cannot."""
        ...

    async def aclose(self) -> None:
        """Stop what the backend started (worker processes); idempotent."""
        ...


class GpgBackend:
    """gpg, one process per call, at most ``parallel`` at once."""

    name = "gpg"

    def __init__(
        self, keyring: Keyring, *, hide_recipients: bool = True, parallel: int | None = None
    ) -> None:
        self.keyring = keyring
        self.hides_recipients = hide_recipients
        self.parallel = parallel or default_parallel()
        self._slots = asyncio.Semaphore(self.parallel)

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        async with self._slots, self.keyring.cores.spare():  # after decrypting (``cores``)
            return await self.keyring.sign_encrypt(
                data, list(recipients), signer, hide=self.hides_recipients
            )

    async def aclose(self) -> None:
        return None
