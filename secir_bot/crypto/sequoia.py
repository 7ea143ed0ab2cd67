"""The optional Sequoia backend for list mail (``crypto.backend = "sequoia"``).

Sequoia-PGP through its Python bindings (PyPI ``pysequoia``, the ``sequoia`` extra) signs
and encrypts to 1000 Cv25519 keys in ~0.2 s where gpg takes ~0.8 s (docs/performance.md).
gpg stays the reference: the keys come from the list's GnuPG home, every message Sequoia
writes is one gpg decrypts and verifies (tests/test_sequoia.py), and a group Sequoia cannot
encrypt is encrypted by gpg instead, with a warning, never dropped.

- pysequoia holds Python's GIL while it works, so it runs in worker processes (spawned, not
  forked: the bot has threads), at most one per core; the event loop never waits on it.
- The members' certificates are exported from the GnuPG home with one gpg call whenever the
  keyring changed (the same stamp as ``KeyCache``) into ``sequoia-certs.pgp`` in that home
  (mode 0600); each worker reads that file again only when its version changed.
- The list's secret key is exported once per process and handed to the workers with each
  call over the pool's pipe; it is never written anywhere else and never logged.
- Only OpenPGP v4 certificates are used (v6 keys stay out, as everywhere in the bot).
- Sequoia writes every recipient's key id into the message. With
  ``crypto.hide_recipients`` on (the default) the worker asks it for binary output, zeroes
  those key ids as gpg's ``--throw-keyids`` does (``crypto.wildcard``) and armours the
  result with pysequoia; a message it cannot rewrite is encrypted by gpg instead, never
  sent with a key id showing. The gpg fallback hides recipients exactly when this backend
  does.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from secir_bot.crypto.backend import default_parallel
from secir_bot.crypto.keycache import Stamp, keyring_stamp
from secir_bot.crypto.keyring import Keyring
from secir_bot.crypto.wildcard import hide_key_ids
from secir_bot.errors import CryptoError

log = logging.getLogger(__name__)

CERTS_FILE = "sequoia-certs.pgp"


def available() -> bool:
    """Whether pysequoia can be imported here (the ``sequoia`` extra is installed)."""
    try:
        import pysequoia  # noqa: F401
    except ImportError:
        return False
    return True


# -- in the worker process ---------------------------------------------------------------

_certs: dict[str, tuple[str, dict[str, Any]]] = {}  # path -> (version, fingerprint -> Cert)


def _encrypt_in_worker(
    certs_path: str,
    version: str,
    secret: bytes,
    data: bytes,
    recipients: tuple[str, ...],
    hide: bool,
) -> bytes:
    """Sign and encrypt in a worker; a ``ValueError`` says why it could not (no secrets)."""
    import pysequoia

    known = _certs.get(certs_path)
    if known is None or known[0] != version:
        try:
            certs = pysequoia.Cert.split_file(certs_path)
        except Exception as exc:  # RuntimeError with Sequoia's text: a key it cannot parse
            raise ValueError(f"Sequoia could not read the keys: {type(exc).__name__}") from None
        known = (version, {c.fingerprint.upper(): c for c in certs})
        _certs[certs_path] = known
    chosen = []
    for fpr in recipients:
        if len(fpr) != 40:
            raise ValueError("only OpenPGP v4 keys are used")
        cert = known[1].get(fpr.upper())
        if cert is None:
            raise ValueError(f"no certificate for {fpr}")
        chosen.append(cert)
    try:
        signer = pysequoia.Tsk.from_bytes(secret).signer()
    except Exception as exc:  # the type only: the text could quote the secret key
        raise ValueError(f"Sequoia could not read the list key: {type(exc).__name__}") from None
    try:
        out: bytes = pysequoia.encrypt(data, recipients=chosen, signer=signer, armor=not hide)
    except Exception as exc:  # pysequoia raises plain exceptions with Sequoia's text
        raise ValueError(f"Sequoia could not encrypt: {type(exc).__name__}") from None
    if not hide:
        return out
    armored: str = pysequoia.armor(hide_key_ids(out), pysequoia.ArmorKind.Message)
    return armored.encode("ascii")


def _warm_up() -> bool:
    import pysequoia  # noqa: F401  (imported once, before the first post needs it)

    return True


# -- in the bot --------------------------------------------------------------------------


class SequoiaBackend:
    """Sign and encrypt with Sequoia in worker processes; gpg for what Sequoia refuses."""

    name = "sequoia"

    def __init__(
        self, keyring: Keyring, *, hide_recipients: bool = True, parallel: int | None = None
    ) -> None:
        if not available():
            raise CryptoError(
                'crypto.backend = "sequoia" needs pysequoia: pip install "secir-bot[sequoia]"'
            )
        self.keyring = keyring
        self.hides_recipients = hide_recipients
        self.parallel = parallel or default_parallel()
        self._slots = asyncio.Semaphore(self.parallel)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._stamp: Stamp | None = None
        self._version = ""
        self._secret: dict[str, bytes] = {}
        self.fallbacks = 0  # groups gpg had to encrypt (tests and benchmarks read it)

    @property
    def certs_path(self) -> Path:
        return self.keyring.home / CERTS_FILE

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.parallel, mp_context=context)
        return self._pool

    async def start(self) -> None:
        """Start the workers and import pysequoia in each (optional: the first post would)."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        await asyncio.gather(*(loop.run_in_executor(pool, _warm_up) for _ in range(self.parallel)))

    async def _prepare(self, signer: str) -> tuple[str, bytes]:
        """The certificates file up to date with the keyring, and the signer's secret key."""
        async with self._lock:
            stamp = keyring_stamp(self.keyring.home)
            if stamp != self._stamp:
                exported = await self.keyring.export_all_public()  # one gpg call
                partial = self.certs_path.with_suffix(".new")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(exported)
                os.replace(partial, self.certs_path)
                self._stamp = stamp
                self._version = repr(stamp)
            if signer not in self._secret:
                armored = await self.keyring.export_secret(signer)
                if "PRIVATE KEY" not in armored:
                    raise CryptoError("gpg could not hand the list key to Sequoia")
                self._secret[signer] = armored.encode("ascii")
            return self._version, self._secret[signer]

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        if not recipients:
            raise CryptoError("no recipients to encrypt to")
        version, secret = await self._prepare(signer)
        loop = asyncio.get_running_loop()
        async with self._slots, self.keyring.cores.spare():  # after decrypting (``cores``)
            try:
                return await loop.run_in_executor(
                    self._executor(),
                    _encrypt_in_worker,
                    str(self.certs_path),
                    version,
                    secret,
                    data,
                    tuple(recipients),
                    self.hides_recipients,
                )
            except (ValueError, BrokenProcessPool, OSError) as exc:
                why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
                if isinstance(exc, BrokenProcessPool):
                    self._pool = None  # a new pool for the next call
                log.warning("Sequoia did not encrypt a group (%s); gpg encrypts it", why)
                self.fallbacks += 1
        return await self.keyring.sign_encrypt(
            data, list(recipients), signer, hide=self.hides_recipients
        )

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
