"""doctor's checks on this machine: the store and the list's keyring."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from secir_bot import fileperms
from secir_bot.config import Config
from secir_bot.crypto import KeyInfo, Keyring
from secir_bot.doctor.base import Check, fail, ok, warn
from secir_bot.model import Member
from secir_bot.store import DB_NAME, LIST_FPR_KEY, Store

KEY_WARN_DAYS = 30


def store(config: Config) -> tuple[list[Check], bool]:
    """The store's checks, and whether the keyring and Matrix checks can use it."""
    path = config.store_path
    if not (path / DB_NAME).exists():
        return [fail("store", f"no store at {path}", "run 'secir-bot init'")], False
    out = []
    loose = fileperms.too_open(path)
    if loose:
        first, mode = loose[0]
        out.append(
            fail(
                "store",
                f"{len(loose)} path(s) in {path} are open to other users, e.g. "
                f"{first.relative_to(path.parent)} (mode {mode:04o})",
                f"chmod -R go-rwx {path} (the bot also does this when it starts)",
            )
        )
    else:
        out.append(ok("store", f"{path} is private (directories 0700, files 0600)"))
    if not (path / "matrix" / "credentials.json").exists():
        out.append(
            fail("store", "no Matrix login in the store", "run 'secir-bot init' (admin manual 4)")
        )
    return out, True


def _date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _expiry(info: KeyInfo, now: float) -> str | None:
    """Why a key will soon stop working, or None."""
    if info.revoked:
        return "is revoked"
    if info.expired:
        return "has expired"
    if info.expires is not None and info.expires - now < KEY_WARN_DAYS * 86400:
        return f"expires on {_date(info.expires)}"
    return None


async def keyring(config: Config) -> list[Check]:
    db = Store.open(config.store_path)
    try:
        fpr = db.kv.get(LIST_FPR_KEY)
        members = db.members.all(active_only=True)
    finally:
        db.close()
    if not fpr:
        return [fail("keyring", "the store has no list key", "run 'secir-bot init'")]
    ring = Keyring(config.store_path / "gnupg")
    try:
        return [await _list_key(ring, fpr), *await _member_keys(ring, members)]
    finally:
        await asyncio.to_thread(ring.close)


async def _list_key(ring: Keyring, fpr: str) -> Check:
    info = await ring.key(fpr)
    if info is None or not info.has_secret:
        return fail(
            "keyring",
            f"the list key {fpr} (or its secret part) is not in the keyring",
            "restore store/gnupg from the backup of this store",
        )
    # Usable means: gpg signs and decrypts with it unattended (no passphrase, not expired).
    probe = b"secir-bot doctor"
    try:
        decrypted = await ring.decrypt(await ring.sign_encrypt(probe, [fpr], fpr))
        usable = decrypted.ok and decrypted.valid and decrypted.signer == fpr
    except Exception:  # CryptoError and whatever gpg makes of a broken keyring
        usable = False
    if not usable:
        return fail(
            "keyring",
            f"the list key {fpr} cannot sign and decrypt unattended",
            "the key must have no passphrase and must not be expired (admin manual 13)",
        )
    soon = _expiry(info, time.time())
    if soon:
        return warn("keyring", f"the list key {fpr} {soon}", "extend it (admin manual 13)")
    until = f"until {_date(info.expires)}" if info.expires else "without expiry"
    return ok("keyring", f"the list key {fpr} signs and decrypts ({until})")


async def _member_keys(ring: Keyring, members: list[Member]) -> list[Check]:
    now = time.time()
    out = []
    for member in members:
        info = await ring.key(member.fingerprint)
        if info is None:
            out.append(
                fail(
                    "keyring",
                    f"the key of {member.label} <{member.email}> is missing from the keyring",
                    "import it again (admin manual 7.4)",
                )
            )
        elif why := _expiry(info, now):
            out.append(
                warn(
                    "keyring",
                    f"the key of {member.label} <{member.email}> {why}: "
                    "they get no list mail once it has",
                    "ask them to extend it, then import it (admin manual 7.4)",
                )
            )
    if not out:
        out.append(ok("keyring", f"{len(members)} member key(s), none expiring within 30 days"))
    return out
