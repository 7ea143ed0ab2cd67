"""The list's keyring: keys, decryption, signatures, through ``crypto.gpg``.

The list's GnuPG home lives in ``store/gnupg`` (mode 0700) and holds the list's secret key
and the members' public keys. Results are the small frozen dataclasses below; nothing of
gpg's own output leaves this package except the bytes gpg itself produced.

Signatures are judged from gpg's status lines, strictly: a message is "validly signed" only
when gpg saw exactly one signature, and that one is good (GOODSIG and VALIDSIG, by a key
that is neither expired nor revoked). The text a caller may show is always the bytes gpg
wrote out (the decrypted literal data, or the text of a clear-signed message), never a
second reading of the input.

``sign_encrypt`` signs once and encrypts once to every recipient given, by default with the
recipients' key ids hidden (``--throw-keyids``); ``crypto.groups`` splits a large audience
into groups and runs one such call per group, several at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from secir_bot.crypto.cores import Cores
from secir_bot.crypto.gpg import Run
from secir_bot.crypto.gpg import run as run_gpg
from secir_bot.crypto.keycache import KeyCache
from secir_bot.crypto.keys import KeyInfo, parse_listing
from secir_bot.errors import CryptoError

DEADLINE = 60.0  # seconds for one gpg call before it is killed
_VERIFY = ("--pinentry-mode", "error", "--trust-model", "always")
_BAD_VERDICTS = ("BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")


@dataclass(frozen=True)
class Decrypted:
    """Outcome of decrypting one OpenPGP message (and checking a signature inside it)."""

    ok: bool
    data: bytes  # exactly what gpg wrote out
    signed: bool  # gpg saw at least one signature
    valid: bool  # exactly one signature, and it is good
    signer: str | None  # primary key fingerprint of that signature
    status: str  # a fixed description of what went wrong ("" when nothing did)
    signature_id: str | None = None  # gpg's id of the signature (replay detection)
    signed_at: float | None = None
    signatures: int = 0  # how many signatures gpg saw, good or not


@dataclass(frozen=True)
class Verified:
    """Outcome of checking a signature that came without encryption around it."""

    valid: bool
    signer: str | None
    status: str
    signature_id: str | None = None
    signed_at: float | None = None
    signatures: int = 0
    data: bytes = b""  # the signed text gpg wrote out (clear-signed messages only)


@dataclass(frozen=True)
class _Signature:
    count: int
    signer: str | None = None
    signature_id: str | None = None
    signed_at: float | None = None
    problem: str = ""


def _signature(run: Run) -> _Signature:
    """What gpg's status lines say about the signatures it checked."""
    verdicts = {k: run.lines(k) for k in ("GOODSIG", *_BAD_VERDICTS)}
    count = max(len(run.lines("NEWSIG")), sum(len(v) for v in verdicts.values()))
    if run.flooded:
        count = max(count, 2)
    if count == 0:
        return _Signature(0)
    if count > 1:
        return _Signature(count, problem="more than one signature")
    valid = run.lines("VALIDSIG")
    if len(verdicts["GOODSIG"]) != 1 or len(valid) != 1 or any(verdicts[k] for k in _BAD_VERDICTS):
        return _Signature(1, problem="bad signature, or an unknown, expired or revoked key")
    fields = valid[0].split()
    try:
        signed_at = float(fields[2])
    except (IndexError, ValueError):
        return _Signature(1, problem="gpg gave no signature time")
    signer = (fields[9] if len(fields) >= 10 else fields[0]).upper()
    sig_ids = run.lines("SIG_ID")
    sig_id = sig_ids[0].split()[0] if sig_ids and sig_ids[0].split() else None
    return _Signature(1, signer=signer, signature_id=sig_id, signed_at=signed_at)


class Keyring:
    """The list's GnuPG home. ``calls`` counts gpg invocations (benchmarks read it)."""

    def __init__(self, home: Path, *, deadline: float = DEADLINE) -> None:
        if not (home / "pubring.kbx").exists() and not home.is_dir():
            raise CryptoError(f"no keyring at {home}")
        self.home = home
        self.calls = 0
        self.deadline = deadline
        self.cache = KeyCache(home, self._list_all)
        # Decrypting and checking what members send goes before encrypting list mail.
        self.cores = Cores()

    @classmethod
    def create(cls, home: Path) -> Keyring:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        return cls(home)

    async def _gpg(self, args: list[str], data: bytes = b"", max_output: int | None = None) -> Run:
        self.calls += 1
        return await run_gpg(self.home, args, data, deadline=self.deadline, max_output=max_output)

    def close(self) -> None:
        """Stop the gpg-agent that gpg started for this home."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            check=False,
            capture_output=True,
            timeout=30,
        )

    # -- keys --------------------------------------------------------------------------

    async def generate(self, name: str, email: str) -> str:
        """Make the list key (Ed25519 signing, Cv25519 encryption, no passphrase)."""
        if any(ord(c) < 32 or ord(c) == 127 for c in name + email):
            raise CryptoError("a key's name and address may not hold control characters")
        params = (
            "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
            "Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
            f"Name-Real: {name}\nName-Email: {email}\nExpire-Date: 0\n"
            "%no-protection\n%commit\n"
        )
        run = await self._gpg(["--gen-key"], params.encode())
        self.cache.invalidate()
        created = run.lines("KEY_CREATED")
        if not created or len(created[0].split()) < 2:
            raise CryptoError(f"gpg could not generate the list key: {run.stderr[-400:]}")
        return created[0].split()[1].upper()

    async def import_key(self, armored: str | bytes) -> list[str]:
        """Import keys; return the fingerprints gpg reported."""
        data = armored.encode() if isinstance(armored, str) else armored
        run = await self._gpg(["--import"], data)
        self.cache.invalidate()
        fprs = sorted({f.split()[1].upper() for f in run.lines("IMPORT_OK") if len(f.split()) > 1})
        if not fprs:
            raise CryptoError("no OpenPGP key found in the data given")
        return fprs

    async def keys(
        self, fingerprints: list[str] | None = None, *, with_secret: bool = True
    ) -> list[KeyInfo]:
        """Describe keys; ``with_secret`` also tells which have secret material (a second
        listing, unfiltered: gpg fails a filtered one that matches public keys only)."""
        listing = ["--with-colons", "--fixed-list-mode", "--with-fingerprint"]
        raw = await self._gpg([*listing, "--list-keys", *(fingerprints or [])])
        secret_fprs: set[str] = set()
        if with_secret:
            secret = await self._gpg([*listing, "--list-secret-keys"])
            secret_fprs = {k.fingerprint for k in parse_listing(secret.output, set())}
        return parse_listing(raw.output, secret_fprs)

    async def _list_all(self) -> bytes:
        listing = ["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--list-keys"]
        run = await self._gpg(listing)
        if run.returncode != 0 and not run.output:
            raise CryptoError(f"gpg could not list the keyring: exit code {run.returncode}")
        return run.output

    async def key(self, fingerprint: str) -> KeyInfo | None:
        found = await self.keys([fingerprint])
        return found[0] if found else None

    async def export_public(self, fingerprint: str) -> str:
        run = await self._gpg(["--armor", "--export", fingerprint])
        return run.output.decode("ascii", errors="replace")

    async def export_all_public(self) -> bytes:
        """Every public key of the keyring, binary (what another OpenPGP library loads)."""
        run = await self._gpg(["--export"])
        if run.returncode != 0:
            raise CryptoError(f"gpg could not export the keyring: exit code {run.returncode}")
        return run.output

    async def export_secret(self, fingerprint: str) -> str:
        run = await self._gpg(
            ["--pinentry-mode", "error", "--armor", "--export-secret-keys", fingerprint]
        )
        return run.output.decode("ascii", errors="replace")

    # -- messages ----------------------------------------------------------------------

    async def decrypt(self, data: bytes, max_output: int = 64 * 2**20) -> Decrypted:
        """Decrypt (and check a signature inside); refuse output over ``max_output`` bytes.

        A few kilobytes of compressed ciphertext can expand to gigabytes: gpg stops writing
        at the limit, and hitting it is reported as a failure, not as a short message.
        """
        async with self.cores.first():
            run = await self._gpg(
                [*_VERIFY, "--max-output", str(max_output), "--decrypt"], data, max_output
            )
        if run.too_large or len(run.output) >= max_output or "max-output" in run.stderr:
            return _undecrypted(f"decrypted content larger than {max_output} bytes")
        if run.has("DECRYPTION_FAILED") or not run.has("DECRYPTION_OKAY"):
            why = "no key of the list can decrypt it" if run.has("NO_SECKEY") else "not decrypted"
            return _undecrypted(why)
        if len(run.lines("PLAINTEXT")) != 1 or run.has("ERROR"):
            # Several literal data packets, or data after the message: gpg's output would
            # not be one message.
            return _undecrypted("the encrypted data is not one OpenPGP message")
        sig = _signature(run)
        return Decrypted(
            ok=True,
            data=run.output,
            signed=sig.count > 0,
            valid=sig.signer is not None,
            signer=sig.signer,
            status=sig.problem,
            signature_id=sig.signature_id,
            signed_at=sig.signed_at,
            signatures=sig.count,
        )

    async def verify_clearsigned(self, signed: bytes) -> Verified:
        """Check a clear-signed message; ``data`` is the text gpg says the signature covers."""
        async with self.cores.first():
            run = await self._gpg([*_VERIFY, "--decrypt"], signed, len(signed) + 1024)
        if run.has("BEGIN_DECRYPTION") or len(run.lines("PLAINTEXT")) != 1 or run.has("ERROR"):
            # Not one clear-signed text: something gpg would decrypt, or several blocks.
            return Verified(False, None, "not one clear-signed text", signatures=0)
        return _verified(run, data=run.output)

    async def verify_detached(self, data: bytes, signature: bytes) -> Verified:
        """Check a detached signature over exactly ``data``."""
        fd, sig_path = tempfile.mkstemp(prefix="sig", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(signature)
            async with self.cores.first():
                run = await self._gpg([*_VERIFY, "--verify", sig_path, "-"], data)
        finally:
            os.unlink(sig_path)
        if run.has("PLAINTEXT"):
            # A complete signed message posing as a detached signature: it signs its own
            # text, not ``data``.
            return Verified(False, None, "not a detached signature", signatures=1)
        return _verified(run)

    async def usable_for_encryption(self, fingerprints: list[str]) -> set[str]:
        """Those of ``fingerprints`` whose keys can be encrypted to now.

        Answered from :class:`KeyCache`: no gpg call at all while the keyring is unchanged,
        one listing of the whole keyring after a change.
        """
        return await self.cache.usable(fingerprints)

    async def sign_encrypt(
        self, data: bytes, recipients: list[str], signer: str, *, hide: bool = True
    ) -> bytes:
        """Sign with ``signer`` and encrypt to every recipient in one gpg call.

        ``hide`` leaves the recipients' key ids out of the message (``--throw-keyids``):
        then each recipient's OpenPGP software tries its key on every encrypted session
        key in turn (docs/performance.md says what that costs them).
        """
        if not recipients:
            raise CryptoError("no recipients to encrypt to")
        run = await self._gpg(
            [
                *_VERIFY,
                "--armor",
                *(["--throw-keyids"] if hide else []),
                "--local-user",
                signer,
                "--sign",
                "--encrypt",
                *_recipients(recipients),
            ],
            data,
        )
        if run.returncode != 0 or not run.has("END_ENCRYPTION") or not run.has("SIG_CREATED"):
            raise CryptoError(f"gpg could not encrypt: {_refusals(run)}")
        return run.output

    async def encrypt(self, data: bytes, recipients: list[str]) -> bytes:
        """Encrypt without signing (operators in tests and the demo use it)."""
        run = await self._gpg([*_VERIFY, "--armor", "--encrypt", *_recipients(recipients)], data)
        if run.returncode != 0 or not run.has("END_ENCRYPTION"):
            raise CryptoError(f"gpg could not encrypt: {_refusals(run)}")
        return run.output

    async def detach_sign(self, data: bytes, signer: str, digest: str | None = None) -> bytes:
        """A detached signature; ``digest`` (e.g. "SHA256") when the mail names it (micalg)."""
        extra = ["--digest-algo", digest] if digest else []
        args = ["--pinentry-mode", "error", "--armor", *extra, "--local-user", signer]
        run = await self._gpg([*args, "--detach-sign"], data)
        if run.returncode != 0 or not run.has("SIG_CREATED"):
            raise CryptoError(f"gpg could not sign: {_refusals(run)}")
        return run.output

    async def clearsign(self, data: bytes, signer: str) -> bytes:
        """A clear-signed text (operators in tests use it to write inline PGP)."""
        run = await self._gpg(
            ["--pinentry-mode", "error", "--local-user", signer, "--clearsign"], data
        )
        if run.returncode != 0 or not run.has("SIG_CREATED"):
            raise CryptoError(f"gpg could not sign: {_refusals(run)}")
        return run.output


def _recipients(fingerprints: list[str]) -> list[str]:
    return [arg for fpr in fingerprints for arg in ("--recipient", fpr)]


def _refusals(run: Run) -> str:
    """gpg's reasons in status words (INV_RECP, INV_SGNR, ...), never its human text."""
    words = [k for k, _ in run.status if k in ("INV_RECP", "INV_SGNR", "NO_PUBKEY", "FAILURE")]
    return ", ".join(dict.fromkeys(words)) or f"exit code {run.returncode}"


def _undecrypted(why: str) -> Decrypted:
    return Decrypted(ok=False, data=b"", signed=False, valid=False, signer=None, status=why)


def _verified(run: Run, data: bytes = b"") -> Verified:
    sig = _signature(run)
    if sig.count == 0:
        return Verified(False, None, "no signature")
    return Verified(
        valid=sig.signer is not None,
        signer=sig.signer,
        status=sig.problem,
        signature_id=sig.signature_id,
        signed_at=sig.signed_at,
        signatures=sig.count,
        data=data if sig.signer is not None else b"",
    )


@contextlib.asynccontextmanager
async def scratch_keyring() -> AsyncIterator[Keyring]:
    """A keyring in a throwaway home, removed after: keys read here touch no real one."""
    home = Path(tempfile.mkdtemp(prefix="gk"))  # short: gpg-agent's socket path is limited
    ring = Keyring(home)
    try:
        yield ring
    finally:
        await asyncio.to_thread(ring.close)
        shutil.rmtree(home, ignore_errors=True)


async def inspect_key(armored: str | bytes) -> list[KeyInfo]:
    """Describe the keys in ``armored`` without touching any real keyring.

    ``has_secret`` is set when the data carries secret key material.
    """
    async with scratch_keyring() as ring:
        return await ring.keys(await ring.import_key(armored))
