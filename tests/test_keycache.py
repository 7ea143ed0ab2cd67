"""The key listing cache (issue 11): one listing until the keyring changes, and expiry.

Real gpg throughout: the list's keyring is a real GnuPG home, "another process" is a real
``gpg --import`` run beside the bot's ``Keyring``, and keys that expire are real keys with
real expiry dates. Only the clock the cache compares them with is moved forward (a seam
the cache owns), so that nothing waits for a key to expire.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from servers import GpgWorld

from secir_bot.crypto import Keyring
from secir_bot.crypto.keycache import KeyCache

ALICE, BOB, CAROL, DAVE = (f"{n}@test.example" for n in ("alice", "bob", "carol", "dave"))
DAY = 86400.0


@pytest_asyncio.fixture
async def ring(gpg_world: GpgWorld) -> AsyncIterator[Keyring]:
    """A list keyring of its own (tests change it): the list key, alice, bob and carol."""
    home = Path(tempfile.mkdtemp(prefix="g"))
    keyring = Keyring.create(home)
    await keyring.generate("SECIR list", "secir@lists.secir.test")
    for email in (ALICE, BOB, CAROL):
        await keyring.import_key(gpg_world.export_public(email))
    yield keyring
    await asyncio.to_thread(keyring.close)
    shutil.rmtree(home, ignore_errors=True)


def _key_with_subkey_expiring(days: int) -> tuple[str, str]:
    """(fingerprint, armored public key): a primary that never expires, an encryption
    subkey that expires in ``days`` days."""
    home = tempfile.mkdtemp(prefix="gk")
    gpg = ["gpg", "--homedir", home, "--batch", "--passphrase", ""]
    try:
        subprocess.run(
            [*gpg, "--quick-gen-key", "Sub Soon <subsoon@test.example>", "ed25519", "sign", "0"],
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True
        ).stdout.decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        subprocess.run(
            [*gpg, "--quick-add-key", fpr, "cv25519", "encr", f"{days}d"],
            check=True,
            capture_output=True,
        )
        armored = subprocess.run(
            [*gpg, "--armor", "--export", fpr], check=True, capture_output=True
        ).stdout.decode()
        return fpr, armored
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


async def test_the_key_listing_is_one_gpg_call_until_the_keyring_changes(
    ring: Keyring, gpg_world: GpgWorld
) -> None:
    members = [gpg_world.fingerprint(e) for e in (ALICE, BOB, CAROL)]
    before = ring.calls

    assert await ring.usable_for_encryption(members) == set(members)
    assert ring.calls == before + 1
    for _ in range(3):  # later posts: no gpg at all
        assert await ring.usable_for_encryption(members) == set(members)
    assert await ring.usable_for_encryption(members[:1]) == set(members[:1])
    assert ring.calls == before + 1

    dave = (await ring.import_key(gpg_world.export_public(DAVE)))[0]
    calls = ring.calls
    assert await ring.usable_for_encryption([*members, dave]) == {*members, dave}
    assert ring.calls == calls + 1  # listed again once, after the import


async def test_a_change_by_another_process_is_seen(ring: Keyring, gpg_world: GpgWorld) -> None:
    dave = gpg_world.fingerprint(DAVE)
    assert await ring.usable_for_encryption([dave]) == set()
    listings = ring.cache.listings

    # An admin's `secir-bot member add` in another process: gpg itself, beside the bot.
    await asyncio.to_thread(
        subprocess.run,
        ["gpg", "--homedir", str(ring.home), "--batch", "--import"],
        input=gpg_world.export_public(DAVE).encode(),
        check=True,
        capture_output=True,
    )

    assert await ring.usable_for_encryption([dave]) == {dave}
    assert ring.cache.listings == listings + 1


async def test_unusable_keys_are_never_answered_usable(ring: Keyring, gpg_world: GpgWorld) -> None:
    bad = []
    for email in ("expired@test.example", "revoked@test.example", "signonly@test.example"):
        bad += await ring.import_key(gpg_world.export_public(email))
    alice = gpg_world.fingerprint(ALICE)

    assert await ring.usable_for_encryption([*bad, alice, "F" * 40]) == {alice}


async def test_a_key_that_expires_while_cached_is_not_used(ring: Keyring) -> None:
    fpr, armored = await asyncio.to_thread(_key_with_subkey_expiring, 2)
    await ring.import_key(armored)
    now = [0.0]
    cache = KeyCache(ring.home, ring._list_all, clock=lambda: now[0])
    now[0] = time.time()
    assert await cache.usable([fpr]) == {fpr}
    until = await cache.expiry(fpr)
    assert until is not None and now[0] + DAY < until < now[0] + 3 * DAY

    now[0] += 3 * DAY  # the encryption subkey has expired; the primary has not
    assert await cache.usable([fpr]) == set()
    assert cache.listings == 1  # the same listing: the time, not a new listing, decides


async def test_the_cache_answers_what_gpg_will_encrypt_to(
    ring: Keyring, gpg_world: GpgWorld
) -> None:
    """What the cache calls usable, gpg encrypts to; what it refuses, gpg refuses too."""
    expired = (await ring.import_key(gpg_world.export_public("expired@test.example")))[0]
    alice = gpg_world.fingerprint(ALICE)
    (list_fpr,) = [k.fingerprint for k in await ring.keys() if k.has_secret]

    assert await ring.usable_for_encryption([alice, expired]) == {alice}
    assert b"BEGIN PGP MESSAGE" in await ring.sign_encrypt(b"x", [alice], list_fpr)
    gpg = ["gpg", "--homedir", str(ring.home), "--batch", "--trust-model", "always"]
    encrypted = await asyncio.to_thread(
        subprocess.run,
        [*gpg, "--encrypt", "--recipient", expired],
        input=b"x",
        capture_output=True,
        check=False,
    )
    assert encrypted.returncode != 0
