"""The optional Sequoia backend (issue 11): every message it writes is checked with gpg.

The list's keyring is a real GnuPG home; Sequoia signs and encrypts in its worker
processes, and each member's own gpg must decrypt the message and find the list's good
signature. With hidden recipients (the default) gpg's own parser must find the wildcard
key id in every session key packet and no member's key id anywhere in the message. A key
imported after the first post is used by the next one; what Sequoia cannot encrypt (here:
a v6-length fingerprint, or a member missing from its certificates) is handed to gpg,
with the same hide setting, and gpg's refusal is the answer.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
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


def _key_ids(gpg_world: GpgWorld, armored: bytes) -> list[str]:
    """The key id of each session key packet, as gpg's own parser reads them."""
    home = gpg_world.make_home([])  # no secret key: gpg lists the packets, decrypts nothing
    run = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--list-packets"],
        input=armored,
        capture_output=True,
        check=False,
    )
    lines = run.stdout.decode().splitlines()
    assert any(line.startswith(":encrypted data packet:") for line in lines), lines
    return [
        line.rsplit("keyid ", 1)[1].upper()
        for line in lines
        if line.startswith(":pubkey enc packet:")
    ]


def _member_key_ids(gpg_world: GpgWorld, emails: tuple[str, ...]) -> set[str]:
    """The key ids of the members' primary keys and subkeys."""
    fprs = [gpg_world.fingerprint(e) for e in emails]
    listing = gpg_world.gpg(gpg_world.home, "--with-colons", "--list-keys", *fprs).stdout
    rows = [line.split(":") for line in listing.decode().splitlines()]
    return {row[4].upper() for row in rows if row[0] in ("pub", "sub")}


def _binary(gpg_world: GpgWorld, armored: bytes) -> bytes:
    return gpg_world.gpg(gpg_world.home, "--dearmor", input=armored).stdout


async def test_hidden_recipients_every_session_key_has_the_wildcard_key_id(
    setup: Setup, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    assert setup.backend.hides_recipients  # the default, as with gpg

    armored = await setup.backend.sign_encrypt(TEXT, fprs, setup.fingerprint)

    assert setup.backend.fallbacks == 0  # Sequoia wrote it, not gpg
    assert _key_ids(gpg_world, armored) == ["0000000000000000"] * len(PEOPLE)
    message = _binary(gpg_world, armored)
    ids = _member_key_ids(gpg_world, PEOPLE)
    assert len(ids) == 2 * len(PEOPLE)
    assert not [i for i in ids if bytes.fromhex(i) in message]
    for email in (*PEOPLE, DAVE):
        assert await _read_by(setup, email, armored) is (email != DAVE), email


async def test_with_hiding_off_the_key_ids_are_shown(setup: Setup, gpg_world: GpgWorld) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    shown = SequoiaBackend(setup.ring, hide_recipients=False, parallel=1)
    try:
        armored = await shown.sign_encrypt(TEXT, fprs, setup.fingerprint)
    finally:
        await shown.aclose()

    assert shown.fallbacks == 0
    ids = _key_ids(gpg_world, armored)
    assert len(ids) == len(PEOPLE) and set(ids) <= _member_key_ids(gpg_world, PEOPLE)
    assert "0000000000000000" not in ids
    assert await _read_by(setup, PEOPLE[-1], armored)


class OneCertificate(SequoiaBackend):
    """Hands its workers a certificates file with only the first member's key in it, or
    ``garbage`` if set."""

    only = ""
    garbage = b""

    async def _prepare(self, signer: str) -> tuple[str, bytes]:
        _, secret = await super()._prepare(signer)
        certs = self.garbage or (await self.keyring.export_public(self.only)).encode()
        self.certs_path.write_bytes(certs)
        return "only one", secret


@pytest.mark.parametrize("hide", [True, False])
async def test_gpg_encrypts_a_refused_group_with_the_same_hide_setting(
    setup: Setup, gpg_world: GpgWorld, hide: bool
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    backend = OneCertificate(setup.ring, hide_recipients=hide, parallel=1)
    backend.only = fprs[0]
    try:
        armored = await backend.sign_encrypt(TEXT, fprs, setup.fingerprint)
    finally:
        await backend.aclose()

    assert backend.fallbacks == 1  # Sequoia had no certificate for the others: gpg did it
    ids = _key_ids(gpg_world, armored)
    assert len(ids) == len(PEOPLE)
    assert (set(ids) == {"0000000000000000"}) is hide
    assert await _read_by(setup, PEOPLE[1], armored)


async def test_certificates_sequoia_cannot_read_make_gpg_encrypt(
    setup: Setup, gpg_world: GpgWorld
) -> None:
    fprs = [gpg_world.fingerprint(e) for e in PEOPLE]
    backend = OneCertificate(setup.ring, parallel=1)
    backend.garbage = b"\x99\x00not a key"
    try:
        armored = await backend.sign_encrypt(TEXT, fprs, setup.fingerprint)
    finally:
        await backend.aclose()

    assert backend.fallbacks == 1
    assert await _read_by(setup, PEOPLE[0], armored)


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
    shown = make_backend("sequoia", setup.ring, hide_recipients=False)
    gpg = make_backend("gpg", setup.ring, hide_recipients=False)
    try:
        assert isinstance(sequoia, SequoiaBackend) and sequoia.hides_recipients
        assert isinstance(shown, SequoiaBackend) and not shown.hides_recipients
        assert isinstance(gpg, GpgBackend) and not gpg.hides_recipients
    finally:
        await sequoia.aclose()
        await shown.aclose()
