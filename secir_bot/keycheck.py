"""Vetting a person's OpenPGP key for the roster, wherever the key comes from.

A key may be pasted or attached (armoured), or named by its fingerprint and then fetched
from a keyring the admins provide (``commands.keyring``: a GnuPG home they fill with keys
they verified). Either way the same rules as ``members.add_member`` apply: exactly one
public key, v4, not expired or revoked, able to sign and to encrypt, with a user id
carrying the person's address, and matching the fingerprint when both are given. A key gpg
cannot read (such as a v6 key for a gpg that predates them) is refused as such.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from secir_bot.crypto import Keyring, inspect_key
from secir_bot.errors import CryptoError


@dataclass(frozen=True)
class VettedKey:
    fingerprint: str
    armored: str
    name: str  # the real-name part of the first user id, for a default display name


async def fetch(keyring_dir: Path | None, fingerprint: str) -> str | None:
    """The armoured public key for ``fingerprint`` from the admins' keyring, if there."""
    if keyring_dir is None or not await asyncio.to_thread(keyring_dir.is_dir):
        return None
    ring = Keyring(keyring_dir)
    try:
        if await ring.key(fingerprint) is None:
            return None
        return await ring.export_public(fingerprint) or None
    finally:
        await asyncio.to_thread(ring.close)


async def vet(
    *,
    email: str,
    armored: str | None,
    fingerprint: str | None,
    keyring_dir: Path | None,
) -> tuple[VettedKey | None, list[str]]:
    """Return the vetted key, or None and every reason it cannot be a member's key."""
    if armored is None:
        if fingerprint is None:
            return None, ["give the key: paste or attach it, or name its fingerprint"]
        armored = await fetch(keyring_dir, fingerprint)
        if armored is None:
            return None, [
                f"key {fingerprint} is not in the admins' keyring; paste or attach the key"
            ]
    if "PRIVATE KEY BLOCK" in armored:
        return None, ["that is a SECRET key: give the public key only (and consider it exposed)"]
    try:
        keys = await inspect_key(armored)
    except CryptoError:
        return None, [
            "gpg cannot read that key (only OpenPGP v4 keys are supported; is it complete?)"
        ]
    if len(keys) != 1:
        return None, [f"give exactly one public key (found {len(keys)})"]
    key = keys[0]
    problems = [f"key {key.fingerprint}: {p}" for p in key.problems(email)]
    if key.has_secret:
        problems.append("that is a SECRET key: give the public key only (and consider it exposed)")
    if fingerprint is not None and fingerprint != key.fingerprint:
        problems.append(f"the key given is {key.fingerprint}, not the fingerprint {fingerprint}")
    if problems:
        return None, problems
    name = key.uids[0].split("<", 1)[0].strip() if key.uids else ""
    return VettedKey(key.fingerprint, armored, name), []
