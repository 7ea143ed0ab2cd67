"""gpg's cores: decrypting incoming mail goes before encrypting list mail (issue 11).

The counting itself with no gpg at all; the wiring with real gpg: a list-mail encryption
waits while decryptions take every core, and a decryption never waits for encryptions."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from secir_bot.crypto import Keyring
from secir_bot.crypto.backend import GpgBackend
from secir_bot.crypto.cores import Cores
from secir_bot.sandbox.operators import wait_until


async def test_list_mail_waits_for_a_free_core_and_decrypting_never_waits() -> None:
    cores = Cores(2)
    order: list[str] = []
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(cores.first())
    await stack.enter_async_context(cores.spare())  # the second core: free, taken at once
    assert cores.busy == 2

    async def encrypt(name: str) -> None:
        async with cores.spare():
            order.append(name)

    waiting = [asyncio.create_task(encrypt(f"e{i}")) for i in range(2)]
    await wait_until(lambda: len(cores._waiting) == 2, 30, "two encryptions waiting")
    async with cores.first():  # a decryption starts although every core is busy
        assert cores.busy == 3 and order == []
    assert order == []  # a core came free, but the room leg's other run still has one
    await stack.aclose()
    await asyncio.wait_for(asyncio.gather(*waiting), 30)
    assert order == ["e0", "e1"] and cores.busy == 0  # first come, first served


async def test_a_cancelled_wait_gives_no_core_away() -> None:
    cores = Cores(1)
    async with cores.first():
        gone = asyncio.create_task(cores.spare().__aenter__())
        await wait_until(lambda: len(cores._waiting) == 1, 30, "the encryption waiting")
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
    assert cores.busy == 0 and not cores._waiting
    async with cores.spare():
        assert cores.busy == 1
    assert cores.busy == 0


@pytest_asyncio.fixture
async def ring() -> AsyncIterator[tuple[Keyring, str]]:
    home = Path(tempfile.mkdtemp(prefix="cores"))
    keyring = Keyring.create(home)
    try:
        yield keyring, await keyring.generate("list", "list@cores.test")
    finally:
        keyring.close()
        shutil.rmtree(home, ignore_errors=True)


async def test_the_gpg_backend_encrypts_on_the_cores_decrypting_leaves_free(
    ring: tuple[Keyring, str],
) -> None:
    keyring, fpr = ring
    keyring.cores = Cores(1)
    backend = GpgBackend(keyring, parallel=2)
    message = await keyring.encrypt(b"incoming\n", [fpr])

    async with keyring.cores.first():  # a decryption holds the only core
        before = keyring.calls
        encrypting = asyncio.create_task(backend.sign_encrypt(b"list copy\n", [fpr], fpr))
        await wait_until(lambda: len(keyring.cores._waiting) == 1, 30, "the encryption waiting")
        assert keyring.calls == before  # gpg was not started for it
        # Another decryption is not held up by the waiting encryption.
        assert (await asyncio.wait_for(keyring.decrypt(message), 60)).data == b"incoming\n"
        assert not encrypting.done()

    armored = await asyncio.wait_for(encrypting, 60)
    assert b"BEGIN PGP MESSAGE" in armored
    assert (await keyring.decrypt(armored)).valid


async def test_decrypting_does_not_wait_for_list_mail_encryption(
    ring: tuple[Keyring, str],
) -> None:
    keyring, fpr = ring
    keyring.cores = Cores(1)
    message = await keyring.encrypt(b"incoming\n", [fpr])
    async with keyring.cores.spare():  # an encryption holds the only core
        assert (await asyncio.wait_for(keyring.decrypt(message), 60)).data == b"incoming\n"
