"""doctor's keyring checks with real gpg: the list key must work unattended, and members'
keys that expire within 30 days are named (they stop getting list mail when they do)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.doctor import Status, local
from secir_bot.members import MemberRequest, add_member
from secir_bot.sandbox.world import offline_config
from secir_bot.store import LIST_FPR_KEY, Store


def _key_expiring_in(days: int, email: str) -> str:
    """An armored public key (Ed25519 + Cv25519) that expires in ``days`` days."""
    home = tempfile.mkdtemp(prefix="gk")
    try:
        gpg = ["gpg", "--homedir", home, "--batch", "--passphrase", ""]
        subprocess.run(
            [*gpg, "--quick-gen-key", f"Soon <{email}>", "ed25519", "sign", f"{days}d"],
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [*gpg, "--with-colons", "--list-keys", email], check=True, capture_output=True
        ).stdout.decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        subprocess.run(
            [*gpg, "--quick-add-key", fpr, "cv25519", "encr", f"{days}d"],
            check=True,
            capture_output=True,
        )
        return subprocess.run(
            [*gpg, "--armor", "--export", fpr], check=True, capture_output=True
        ).stdout.decode()
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


@pytest_asyncio.fixture
async def listed() -> AsyncIterator[Config]:
    """A store with a list key and one member whose key expires in ten days."""
    directory = Path(tempfile.mkdtemp(prefix="d"))
    config = offline_config(directory, "test.example")
    store = Store.open(config.store_path, create=True)
    ring = Keyring.create(config.store_path / "gnupg")
    try:
        store.kv.put(LIST_FPR_KEY, await ring.generate("SECIR list", config.list.address))
        key = await asyncio.to_thread(_key_expiring_in, 10, "soon@test.example")
        await add_member(
            store,
            ring,
            MemberRequest(tld=".nl", name="Sam Soon", email="soon@test.example", key=key),
        )
    finally:
        ring.close()
        store.close()
    yield config
    await asyncio.to_thread(Keyring(config.store_path / "gnupg").close)
    shutil.rmtree(directory, ignore_errors=True)


async def test_doctor_names_a_member_key_that_expires_soon(listed: Config) -> None:
    checks = await local.keyring(listed)
    assert checks[0].status is Status.OK and "signs and decrypts" in checks[0].text
    (soon,) = [c for c in checks if c.status is Status.WARN]
    assert "the key of Sam Soon (.nl) <soon@test.example> expires on" in soon.text
    assert "import it" in soon.fix


async def test_doctor_names_a_list_key_that_cannot_be_used(listed: Config) -> None:
    store = Store.open(listed.store_path)
    try:
        store.kv.put(LIST_FPR_KEY, "0" * 40)  # a list key the keyring does not have
    finally:
        store.close()
    checks = await local.keyring(listed)
    assert checks[0].status is Status.FAIL
    assert "is not in the keyring" in checks[0].text
