"""The optional Sequoia backend (issue 11): every message it writes is checked with gpg.

The list's keyring is a real GnuPG home; Sequoia signs and encrypts in its worker
processes, and each member's own gpg must decrypt the message and find the list's good
signature. A key imported after the first post is used by the next one; what Sequoia
cannot encrypt (here: a v6-length fingerprint) is handed to gpg, and gpg's refusal is the
answer.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from servers import GpgWorld

from secir_bot.crypto import Keyring
from secir_bot.crypto.groups import sign_encrypt_groups
from secir_bot.crypto.sequoia import CERTS_FILE, SequoiaBackend
from secir_bot.errors import CryptoError

pytest.importorskip("pysequoia")  # the `sequoia` extra; part of the test extra

PEOPLE = tuple(f"{n}@test.example" for n in ("alice", "bob", "carol"))
DAVE = "dave@test.example"
TEXT = "Incident 42: résolveur en panne\r\n-- \r\nGrüße\r\n".encode()


@dataclass(frozen=True)
class Setup:
    ring: Keyring
    backend: SequoiaBackend
    fingerprint: str
    homes: dict[str, Path]


@pytest_asyncio.fixture
async def setup(gpg_world: GpgWorld) -> AsyncIterator[Setup]:
    home = Path(tempfile.mkdtemp(prefix="g"))
    ring = Keyring.create(home)
    fpr = await ring.generate("SECIR list", "secir@lists.secir.test")
    for email in PEOPLE:
        await ring.import_key(gpg_world.export_public(email))
    public = await ring.export_public(fpr)
    homes = {}
    for email in (*PEOPLE, DAVE):
        homes[email] = gpg_world.make_home([email])
        gpg_world.gpg(homes[email], "--import", input=public.encode())
    backend = SequoiaBackend(ring, parallel=2)
    try:
        yield Setup(ring, backend, fpr, homes)
    finally:
        await backend.aclose()
        await asyncio.to_thread(ring.close)
        shutil.rmtree(home, ignore_errors=True)


async def _read_by(setup: Setup, email: str, armored: bytes) -> bool:
    """Whether ``email``'s own gpg decrypts it and finds the list's good signature."""
    result = await Keyring(setup.homes[email]).decrypt(armored)
    if not result.ok:
        return False
    assert result.data == TEXT
    assert result.valid and result.signer == setup.fingerprint, result.status
    return True


async def test_every_message_sequoia_writes_decrypts_and_verifies_with_gpg(
    setup: Setup, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    calls = setup.ring.calls

    sealed = await sign_encrypt_groups(setup.backend, TEXT, fprs, setup.fingerprint, group_size=2)

    assert setup.backend.fallbacks == 0
    # gpg ran only to export the keys for Sequoia: once the public keys, once the list key.
    assert setup.ring.calls - calls == 2
    for group in sealed:
        assert group.armored.startswith(b"-----BEGIN PGP MESSAGE-----")
        for email in (*PEOPLE, DAVE):
            expected = gpg_world.fingerprint(email) in group.recipients
            assert await _read_by(setup, email, group.armored) is expected, email
    mode = (setup.ring.home / CERTS_FILE).stat().st_mode & 0o777
    assert mode == 0o600


async def test_a_key_imported_later_is_used_by_the_next_post(
    setup: Setup, gpg_world: GpgWorld
) -> None:
    alice = gpg_world.fingerprint(PEOPLE[0])
    await setup.backend.sign_encrypt(TEXT, [alice], setup.fingerprint)
    dave = (await setup.ring.import_key(gpg_world.export_public(DAVE)))[0]

    armored = await setup.backend.sign_encrypt(TEXT, [alice, dave], setup.fingerprint)

    assert setup.backend.fallbacks == 0
    assert await _read_by(setup, DAVE, armored)
    assert await _read_by(setup, PEOPLE[0], armored)


async def test_what_sequoia_refuses_goes_to_gpg_and_gpgs_answer_counts(
    setup: Setup, gpg_world: GpgWorld
) -> None:
    alice = gpg_world.fingerprint(PEOPLE[0])
    v6_length = "A" * 64  # only v4 keys are used; gpg does not know this one either

    with pytest.raises(CryptoError, match="could not encrypt"):
        await setup.backend.sign_encrypt(TEXT, [alice, v6_length], setup.fingerprint)
    assert setup.backend.fallbacks == 1


async def test_the_configured_backend_is_made(setup: Setup) -> None:
    from secir_bot.crypto.backend import GpgBackend
    from secir_bot.crypto.groups import make_backend

    sequoia = make_backend("sequoia", setup.ring)
    gpg = make_backend("gpg", setup.ring, hide_recipients=False)
    try:
        assert isinstance(sequoia, SequoiaBackend) and not sequoia.hides_recipients
        assert isinstance(gpg, GpgBackend) and not gpg.hides_recipients
    finally:
        await sequoia.aclose()
