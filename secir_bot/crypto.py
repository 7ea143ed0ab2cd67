"""OpenPGP through python-gnupg: the only module that imports gnupg.

Every gpg call blocks, so each runs in a worker thread (``asyncio.to_thread``). The list's
keyring lives in ``store/gnupg`` (mode 0700) and holds the list's secret key and the
members' public keys. Results of gnupg are translated into the small frozen dataclasses
below; nothing of gnupg's types leaves this module.

Fan-out is one call: a post is signed once and encrypted once to every recipient, with
the recipients' key ids hidden (``--throw-keyids``), whatever the number of members.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import gnupg

from secir_bot.errors import CryptoError

log = logging.getLogger(__name__)

MIN_RSA_BITS = 3072


@dataclass(frozen=True)
class KeyInfo:
    """What the bot needs to know about one OpenPGP key."""

    fingerprint: str
    uids: tuple[str, ...]
    emails: tuple[str, ...]
    can_sign: bool
    can_encrypt: bool
    expires: float | None
    revoked: bool
    expired: bool
    has_secret: bool = False
    algorithm: int = 0  # OpenPGP public-key algorithm of the primary key
    length: int = 0

    @property
    def v4(self) -> bool:
        return len(self.fingerprint) == 40

    def problems(self, email: str | None = None) -> list[str]:
        """Why this key cannot be a member's key (empty when it can)."""
        out = []
        if not self.v4:
            out.append("only OpenPGP v4 keys are supported")
        if self.revoked:
            out.append("the key is revoked")
        elif self.expired:
            out.append("the key has expired")
        else:
            if not self.can_encrypt:
                out.append("the key has no usable encryption subkey")
            if not self.can_sign:
                out.append("the key cannot sign")
        if self.algorithm in (1, 2, 3) and self.length < MIN_RSA_BITS:
            out.append(f"RSA keys need at least {MIN_RSA_BITS} bits (this one has {self.length})")
        if self.algorithm in (16, 17, 20):
            out.append("DSA and ElGamal keys are not accepted; use Ed25519/Cv25519 or RSA")
        if email is not None and email.lower() not in self.emails:
            out.append(f"no user id of the key carries {email}")
        return out


@dataclass(frozen=True)
class Decrypted:
    """Outcome of decrypting one OpenPGP message (and checking a signature inside it)."""

    ok: bool
    data: bytes
    signed: bool
    valid: bool
    signer: str | None  # primary key fingerprint of a valid signature
    status: str
    signature_id: str | None = None  # gpg's id of the signature (replay detection)
    signed_at: float | None = None


@dataclass(frozen=True)
class Verified:
    valid: bool
    signer: str | None
    status: str
    signature_id: str | None = None
    signed_at: float | None = None


def _key_info(raw: dict[str, Any], secret_fprs: set[str]) -> KeyInfo:
    cap = str(raw.get("cap") or "")
    validity = str(raw.get("trust") or "")
    expires = float(raw["expires"]) if raw.get("expires") else None
    uids = tuple(str(u) for u in raw.get("uids") or ())
    emails = tuple(parseaddr(u)[1].lower() for u in uids if "@" in u)
    fpr = str(raw["fingerprint"]).upper()
    return KeyInfo(
        fingerprint=fpr,
        uids=uids,
        emails=emails,
        can_sign="S" in cap,
        can_encrypt="E" in cap,
        expires=expires,
        revoked=validity == "r",
        expired=validity == "e" or (expires is not None and expires < time.time()),
        has_secret=fpr in secret_fprs,
        algorithm=int(raw.get("algo") or 0),
        length=int(raw.get("length") or 0),
    )


class Keyring:
    """The list's GnuPG home. ``calls`` counts gpg invocations (benchmarks read it)."""

    def __init__(self, home: Path) -> None:
        if not (home / "pubring.kbx").exists() and not home.is_dir():
            raise CryptoError(f"no keyring at {home}")
        self.home = home
        self.calls = 0
        self._gpg = gnupg.GPG(gnupghome=str(home))
        self._gpg.encoding = "utf-8"

    @classmethod
    def create(cls, home: Path) -> Keyring:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        return cls(home)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await asyncio.to_thread(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop the gpg-agent that gpg started for this home."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            check=False,
            capture_output=True,
        )

    # -- keys --------------------------------------------------------------------------

    async def generate(self, name: str, email: str) -> str:
        """Make the list key (Ed25519 signing, Cv25519 encryption, no passphrase)."""
        params = self._gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            key_usage="sign",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            subkey_usage="encrypt",
            name_real=name,
            name_email=email,
            expire_date=0,
            no_protection=True,
        )
        result = await self._run(self._gpg.gen_key, params)
        if not result.fingerprint:
            raise CryptoError(f"gpg could not generate the list key: {result.stderr[-400:]}")
        return str(result.fingerprint).upper()

    async def import_key(self, armored: str | bytes) -> list[str]:
        """Import keys; return the fingerprints gpg reported."""
        result = await self._run(self._gpg.import_keys, armored)
        fprs = sorted({str(f).upper() for f in (result.fingerprints or []) if f})
        if not fprs:
            raise CryptoError("no OpenPGP key found in the data given")
        return fprs

    async def keys(
        self, fingerprints: list[str] | None = None, *, with_secret: bool = True
    ) -> list[KeyInfo]:
        """Describe keys; ``with_secret`` also tells which have secret material (a second
        listing, unfiltered: gpg fails a filtered one that matches public keys only)."""
        raw = await self._run(self._gpg.list_keys, False, fingerprints)
        secret_fprs: set[str] = set()
        if with_secret:
            secret = await self._run(self._gpg.list_keys, True)
            secret_fprs = {str(k["fingerprint"]).upper() for k in secret}
        return [_key_info(k, secret_fprs) for k in raw]

    async def key(self, fingerprint: str) -> KeyInfo | None:
        found = await self.keys([fingerprint])
        return found[0] if found else None

    async def export_public(self, fingerprint: str) -> str:
        return str(await self._run(self._gpg.export_keys, fingerprint, armor=True))

    async def export_secret(self, fingerprint: str) -> str:
        return str(
            await self._run(
                self._gpg.export_keys, fingerprint, True, armor=True, expect_passphrase=False
            )
        )

    # -- messages ----------------------------------------------------------------------

    async def decrypt(self, data: bytes, max_output: int = 64 * 2**20) -> Decrypted:
        """Decrypt (and check a signature inside); refuse output over ``max_output`` bytes.

        A few kilobytes of compressed ciphertext can expand to gigabytes: gpg stops writing
        at the limit, and hitting it is reported as a failure, not as a short message.
        """
        result = await self._run(
            self._gpg.decrypt, data, always_trust=True, extra_args=["--max-output", str(max_output)]
        )
        if "max-output" in (result.stderr or "") or len(result.data or b"") >= max_output:
            return Decrypted(
                ok=False,
                data=b"",
                signed=False,
                valid=False,
                signer=None,
                status=f"decrypted content larger than {max_output} bytes",
            )
        # A signature shows as valid, in sig_info (good ones), or as a problem (bad ones,
        # unknown keys); "no secret key" problems concern decryption, not signatures.
        sig_problems = [
            p for p in getattr(result, "problems", []) if p.get("status") != "no secret key"
        ]
        signed = bool(result.valid or getattr(result, "sig_info", None) or sig_problems)
        signer = result.pubkey_fingerprint or result.fingerprint
        sig_id, signed_at = _signature_facts(result)
        return Decrypted(
            ok=bool(result.ok),
            data=bytes(result.data or b""),
            signed=signed,
            valid=bool(result.valid),
            signer=str(signer).upper() if result.valid and signer else None,
            status=str(result.status or ""),
            signature_id=sig_id,
            signed_at=signed_at,
        )

    async def verify_detached(self, data: bytes, signature: bytes) -> Verified:
        fd, sig_path = tempfile.mkstemp(prefix="sig", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(signature)
            result = await self._run(self._gpg.verify_data, sig_path, data)
        finally:
            os.unlink(sig_path)
        return _verified(result)

    async def verify(self, signed: bytes) -> Verified:
        """Check an inline (clear-signed or opaque) signed message."""
        return _verified(await self._run(self._gpg.verify, signed))

    async def usable_for_encryption(self, fingerprints: list[str]) -> set[str]:
        """Those of ``fingerprints`` whose keys can be encrypted to now (one listing)."""
        return {
            k.fingerprint
            for k in await self.keys(fingerprints, with_secret=False)
            if k.can_encrypt and not k.expired and not k.revoked
        }

    async def sign_encrypt(self, data: bytes, recipients: list[str], signer: str) -> bytes:
        """Sign with ``signer`` and encrypt to every recipient in one gpg call."""
        if not recipients:
            raise CryptoError("no recipients to encrypt to")
        result = await self._run(
            self._gpg.encrypt,
            data,
            recipients,
            sign=signer,
            always_trust=True,
            armor=True,
            extra_args=["--throw-keyids"],
        )
        if not result.ok:
            raise CryptoError(f"gpg could not encrypt: {result.status}")
        return bytes(result.data)

    async def encrypt(self, data: bytes, recipients: list[str]) -> bytes:
        """Encrypt without signing (operators in tests and the demo use it)."""
        result = await self._run(self._gpg.encrypt, data, recipients, always_trust=True, armor=True)
        if not result.ok:
            raise CryptoError(f"gpg could not encrypt: {result.status}")
        return bytes(result.data)

    async def detach_sign(self, data: bytes, signer: str) -> bytes:
        result = await self._run(self._gpg.sign, data, keyid=signer, detach=True, binary=False)
        if not result.data:
            raise CryptoError(f"gpg could not sign: {result.status}")
        return bytes(result.data)


def _signature_facts(result: Any) -> tuple[str | None, float | None]:
    """gpg's id and creation time of the (last) signature in a result."""
    sig_id = result.signature_id or next(iter(getattr(result, "sig_info", None) or {}), None)
    stamp = result.sig_timestamp or None
    return (str(sig_id) if sig_id else None), (float(stamp) if stamp else None)


def _verified(result: Any) -> Verified:
    signer = result.pubkey_fingerprint or result.fingerprint
    sig_id, signed_at = _signature_facts(result)
    return Verified(
        valid=bool(result.valid),
        signer=str(signer).upper() if result.valid and signer else None,
        status=str(result.status or ""),
        signature_id=sig_id,
        signed_at=signed_at,
    )


async def inspect_key(armored: str | bytes) -> list[KeyInfo]:
    """Describe the keys in ``armored`` without touching any real keyring.

    ``has_secret`` is set when the data carries secret key material.
    """
    home = Path(tempfile.mkdtemp(prefix="gk"))  # short: gpg-agent's socket path is limited
    try:
        ring = Keyring(home)
        fprs = await ring.import_key(armored)
        return await ring.keys(fprs)
    finally:
        await asyncio.to_thread(ring.close) if "ring" in locals() else None
        shutil.rmtree(home, ignore_errors=True)
